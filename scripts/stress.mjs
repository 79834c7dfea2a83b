// `npm run test:stress [-- RUNS]`: the whole suite RUNS times in a row (default 5) while every
// core is kept busy by a CPU burner, stopping at the first red run. A test that only passes on
// an idle machine waits on the clock somewhere; this is how to find it.
import { spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

const runs = Number(process.argv[2] ?? process.env.STRESS_RUNS ?? 5);
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`test:stress: RUNS must be a positive integer, got ${process.argv[2] ?? process.env.STRESS_RUNS}`);
  process.exit(2);
}

// what `npm test` does once (redis-server present, types check), then only the suite in the loop
for (const [command, args] of [['node', ['scripts/ensure-redis.mjs']], ['npx', ['tsc', '-p', 'tsconfig.json']]]) {
  if (spawnSync(command, args, { stdio: 'inherit' }).status !== 0) process.exit(1);
}

// one busy loop per core, at the tests' own priority
const burners = Array.from({ length: availableParallelism() }, () =>
  spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }),
);
const stopBurners = () => burners.forEach((burner) => burner.kill('SIGKILL'));
process.on('exit', stopBurners);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));

const results = [];
for (let run = 1; run <= runs; run++) {
  console.log(`\n=== test:stress run ${run}/${runs} (${burners.length} CPU burners) ===`);
  const started = Date.now();
  const code = await new Promise((resolve) => spawn('npx', ['vitest', 'run'], { stdio: 'inherit' }).once('exit', (c) => resolve(c ?? 1)));
  results.push({ run, green: code === 0, seconds: Math.round((Date.now() - started) / 1000) });
  if (code !== 0) break;
}

console.log('\n=== test:stress summary ===');
for (const { run, green, seconds } of results) console.log(`run ${run}: ${green ? 'green' : 'RED'} (${seconds} s)`);
const green = results.filter((r) => r.green).length;
console.log(green === runs ? `all ${runs} runs green under load` : `stopped at the first red run: ${green} of ${runs} green`);
process.exit(green === runs ? 0 : 1);
