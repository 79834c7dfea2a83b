// Bundles the dashboard (web/) into dist/ui: app.js, app.css and index.html, all served by the
// gateway itself (no CDN). Run by `npm run build`, `npm run demo` and the test setup.
import { copyFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist/ui`;

export async function buildUi(): Promise<void> {
  mkdirSync(outdir, { recursive: true });
  await build({
    entryPoints: { app: `${root}web/main.tsx` },
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2022',
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir,
    logLevel: 'warning',
  });
  copyFileSync(`${root}web/index.html`, `${outdir}/index.html`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildUi();
