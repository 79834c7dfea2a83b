import type { onRequestHookHandler } from 'fastify';

/**
 * An onRequest hook that lets at most `perTurn` requests start their work (auth, body, the
 * upstream call) per turn of the event loop; the rest start on the next turns, in arrival
 * order. Thousands of streams opened at once then never hold the loop in one piece: between
 * two turns it reads sockets again, so `/health/live` (not paced) and streams already open are
 * served during the burst. A request alone, or a few at a time, starts at once as before.
 */
export function pacedStarts(perTurn: number): onRequestHookHandler {
  let startedThisTurn = 0;
  let turnScheduled = false;
  const waiting: Array<() => void> = [];

  const scheduleTurn = () => {
    if (turnScheduled) return;
    turnScheduled = true;
    // setImmediate: after this turn's I/O, so what arrived meanwhile is read first
    setImmediate(nextTurn);
  };
  const nextTurn = () => {
    turnScheduled = false;
    startedThisTurn = 0;
    while (startedThisTurn < perTurn && waiting.length > 0) {
      startedThisTurn++;
      waiting.shift()!();
    }
    // a turn that started any request is counted until the next one begins
    if (startedThisTurn > 0) scheduleTurn();
  };

  return (_request, _reply, done) => {
    scheduleTurn();
    if (waiting.length === 0 && startedThisTurn < perTurn) {
      startedThisTurn++;
      return done();
    }
    waiting.push(done);
  };
}
