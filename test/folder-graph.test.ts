import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = join(import.meta.dirname, '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [],
  );
}

/**
 * Folder of src/ → the folders it imports. A root file (gateway.ts, errors.ts…) is a node of its
 * own, so a folder cannot reach back to itself through one either.
 */
function folderGraph(): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const file of sourceFiles(SRC)) {
    const parts = relative(SRC, file).split(sep);
    const node = parts.length > 1 ? parts[0]! : parts[0]!.replace(/\.ts$/, '');
    const imports = graph.get(node) ?? new Set<string>();
    graph.set(node, imports);
    // from a folder: '../x/…' or '../x.js'; from a root file: './x/…' or './x.js'
    const pattern = parts.length > 1 ? /from '\.\.\/([\w-]+)(?:\/|\.js')/g : /from '\.\/([\w-]+)(?:\/|\.js')/g;
    for (const match of readFileSync(file, 'utf8').matchAll(pattern)) if (match[1] !== node) imports.add(match[1]!);
  }
  return graph;
}

/** A cycle of folders (each importing the next), or null. */
function findCycle(graph: Map<string, Set<string>>): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (folder: string): string[] | null => {
    if (state.get(folder) === 'done') return null;
    if (state.get(folder) === 'open') return [...path.slice(path.indexOf(folder)), folder];
    state.set(folder, 'open');
    path.push(folder);
    for (const next of graph.get(folder) ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(folder, 'done');
    return null;
  };
  for (const folder of graph.keys()) {
    const cycle = visit(folder);
    if (cycle) return cycle;
  }
  return null;
}

describe('the folders of src/', () => {
  it('import each other without a cycle: data flows one way', () => {
    const graph = folderGraph();
    expect(graph.size).toBeGreaterThan(5);
    expect(findCycle(graph)).toBeNull();
  });

  it('the cycle check finds a cycle', () => {
    const graph = new Map([
      ['a', new Set(['b'])],
      ['b', new Set(['c'])],
      ['c', new Set(['a'])],
    ]);
    expect(findCycle(graph)).toEqual(['a', 'b', 'c', 'a']);
  });
});
