import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/** A checkout of its own holding only the start script (and whatever `dist` the test puts there). */
function checkout(): string {
  const root = mkdtempSync(join(tmpdir(), 'tollgate-start-'));
  mkdirSync(join(root, 'scripts'));
  copyFileSync('scripts/start.mjs', join(root, 'scripts', 'start.mjs'));
  return root;
}

const start = (root: string) => spawnSync(process.execPath, [join(root, 'scripts', 'start.mjs')], { cwd: root, encoding: 'utf8', timeout: 20_000 });

describe('npm start', () => {
  it('starts from the build and never compiles', () => {
    const scripts = JSON.parse(readFileSync('package.json', 'utf8')).scripts;
    expect(scripts.start).toBe('node scripts/start.mjs');
    expect(scripts.prestart).toBeUndefined();
  });

  it('without a build: one line saying to run npm run build, and a non-zero exit', () => {
    const run = start(checkout());
    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toContain('npm run build');
  });

  it('with a build: runs dist/main.js', () => {
    const root = checkout();
    mkdirSync(join(root, 'dist'));
    writeFileSync(join(root, 'dist', 'main.js'), "console.log('dist/main.js ran');\n");
    const run = start(root);
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe('dist/main.js ran\n');
    expect(run.status).toBe(0);
  });
});
