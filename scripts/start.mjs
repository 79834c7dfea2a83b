// `npm start`: runs the build (dist/main.js) in this process and never compiles, so replicas
// started together on one checkout cannot race on rewriting dist/. No build: one clear line.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/main.js', import.meta.url);

if (!existsSync(main)) {
  console.error(`tollgate: no build at ${fileURLToPath(main)}; run \`npm run build\` first, then \`npm start\`.`);
  process.exit(1);
}
await import(main.href);
