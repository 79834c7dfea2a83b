// `npm test` needs a real redis-server on PATH; install Debian's package when running as root.
import { execSync, spawnSync } from 'node:child_process';

const onPath = () => spawnSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' }).status === 0;

if (!onPath()) {
  if (process.getuid?.() !== 0) {
    console.error('redis-server is not on PATH: install it with `sudo apt-get install -y redis-server`, then run npm test again.');
    process.exit(1);
  }
  console.log('redis-server not found: installing Debian package redis-server');
  execSync('apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server', { stdio: 'inherit' });
  if (!onPath()) {
    console.error('redis-server is still not on PATH after installing it.');
    process.exit(1);
  }
}
