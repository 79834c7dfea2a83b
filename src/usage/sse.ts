// Incremental Server-Sent Events parser (WHATWG "event stream" rules, minus
// `id`/`retry`, which metering never needs). Upstream bodies arrive in
// arbitrary chunks, so everything that is not yet a complete line is carried
// over; the carry-over is capped so a stream without line breaks cannot make
// the gateway buffer without bound.
import { StringDecoder } from 'node:string_decoder';

export interface SseEvent {
  event?: string;
  data: string;
}

export interface SseParserOptions {
  /** Max chars kept for an unterminated line, and for one event's data. Default 1 MiB. */
  maxBuffer?: number;
}

const LF = 10;
const CR = 13;

export class SseParser {
  private readonly decoder = new StringDecoder('utf8');
  private readonly maxBuffer: number;
  private partial = ''; // unterminated line carried over between chunks
  private skipLF = false; // previous chunk ended in CR; a leading LF belongs to it
  private discardLine = false; // partial line overflowed: skip to the next line break
  private discardEvent = false; // event lost data to an overflow: don't dispatch it
  private started = false;
  private data: string[] = [];
  private dataLen = 0;
  private eventType: string | undefined;

  constructor(opts: SseParserOptions = {}) {
    this.maxBuffer = opts.maxBuffer ?? 1024 * 1024;
  }

  push(chunk: Buffer | string): SseEvent[] {
    let text = typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // spec: strip a leading BOM
    }
    const out: SseEvent[] = [];
    let start = 0;
    if (this.skipLF && text.length > 0) {
      this.skipLF = false;
      if (text.charCodeAt(0) === LF) start = 1;
    }
    for (let i = start; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== LF && c !== CR) continue;
      const line = this.partial + text.slice(start, i);
      this.partial = '';
      if (c === CR) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === LF) i++;
        } else {
          this.skipLF = true;
        }
      }
      start = i + 1;
      if (this.discardLine) this.discardLine = false; // tail of an oversized line
      else this.line(line, out);
    }
    if (start < text.length && !this.discardLine) {
      this.partial += text.slice(start);
      if (this.partial.length > this.maxBuffer) this.overflow();
    }
    return out;
  }

  /**
   * End of stream. Strictly, an event without its terminating blank line is
   * discarded; we are lenient and dispatch it, since a usage event at the very
   * end of a sloppy upstream is exactly what metering must not lose.
   */
  end(): SseEvent[] {
    const out = this.push(this.decoder.end());
    if (this.partial.length > 0 && !this.discardLine) this.line(this.partial, out);
    this.partial = '';
    this.line('', out);
    return out;
  }

  private overflow(): void {
    this.partial = '';
    this.discardLine = true;
    this.discardEvent = true;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line.length === 0) return this.dispatch(out);
    if (line.charCodeAt(0) === 58 /* ':' */) return; // comment / keep-alive
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32 /* ' ' */) value = value.slice(1);
    if (field === 'data') {
      if (this.discardEvent) return;
      this.dataLen += value.length + 1;
      if (this.dataLen > this.maxBuffer) {
        // Many short data lines can grow memory just like one long line.
        this.data = [];
        this.dataLen = 0;
        this.discardEvent = true;
        return;
      }
      this.data.push(value);
    } else if (field === 'event') {
      this.eventType = value;
    }
  }

  private dispatch(out: SseEvent[]): void {
    if (this.data.length > 0 && !this.discardEvent) {
      const ev: SseEvent = { data: this.data.join('\n') };
      if (this.eventType) ev.event = this.eventType;
      out.push(ev);
    }
    this.data = [];
    this.dataLen = 0;
    this.eventType = undefined;
    this.discardEvent = false;
  }
}
