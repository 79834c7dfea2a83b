import { useCallback, useEffect, useMemo, useState } from 'preact/hooks';
import { api, historyQuery, type History, type Range } from '../api';

/** Loads `path` (again whenever it changes, or on `reload()`); `error` holds the failure. */
export function useApi<T>(path: string | null) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState('');
  const [round, setRound] = useState(0);
  useEffect(() => {
    if (!path) return;
    let live = true;
    api<T>(path).then(
      (value) => live && (setData(value), setError('')),
      (err: Error) => live && setError(err.message),
    );
    return () => {
      live = false;
    };
  }, [path, round]);
  const reload = useCallback(() => setRound((r) => r + 1), []);
  return { data, error, reload };
}

/**
 * The admin history of the last `range`, grouped: the window is fixed when range or grouping
 * change or on `reload()`, not at every render (its end is "now").
 */
export function useHistory(range: Range, groupBy: History['group_by']) {
  const [round, setRound] = useState(0);
  const query = useMemo(() => historyQuery(range, groupBy), [range, groupBy, round]);
  const result = useApi<History>(`/admin/usage?${query}`);
  const reload = useCallback(() => setRound((r) => r + 1), []);
  return { ...result, query, reload };
}
