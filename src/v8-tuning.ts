/**
 * V8 settings of a replica process, for its idle memory. main.ts imports this module first: the
 * settings must be in place before the other modules load. Stated in the README (Performance).
 */
import { setFlagsFromString } from 'node:v8';

// WebAssembly stays on its baseline compiler (Liftoff). undici's HTTP/1 parser (llhttp) is
// WebAssembly; after the first upstream responses V8 would recompile it with TurboFan, a burst of
// ~35 MB of compiler memory on helper threads that the C allocator then keeps as RSS. Measured:
// streamed responses cost the same CPU either way.
setFlagsFromString('--liftoff-only');

// Loading the modules keeps almost every young object alive, which makes V8 grow the young
// generation to its maximum (2 × 16 MiB, ~15 MB of it resident) before anything is served. It is
// held at its initial size while starting (more, smaller scavenges then) and grows with traffic
// afterwards, as it would have.
setFlagsFromString('--semi-space-growth-factor=1');

/** The replica is listening: the young generation grows with its traffic again (V8's default factor). */
export function startupFinished(): void {
  setFlagsFromString('--semi-space-growth-factor=2');
}
