import { useCallback, useEffect, useState } from 'preact/hooks';
import { api } from '../api';

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
