// The browser tests drive Debian's chromium (never a downloaded browser build); install the
// package when running as root, as ensure-redis.mjs does for redis-server.
import { execSync, spawnSync } from 'node:child_process';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const present = () => spawnSync(CHROMIUM, ['--version'], { stdio: 'ignore' }).status === 0;

if (!present()) {
  if (process.getuid?.() !== 0) {
    console.error(`chromium is not at ${CHROMIUM}: install it with \`sudo apt-get install -y chromium\`, then run npm test again.`);
    process.exit(1);
  }
  console.log('chromium not found: installing Debian package chromium');
  execSync('apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium', { stdio: 'inherit' });
  if (!present()) {
    console.error(`chromium is still not at ${CHROMIUM} after installing it.`);
    process.exit(1);
  }
}
