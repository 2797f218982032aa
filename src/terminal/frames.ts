// The attach protocol's frames, after the HTTP Upgrade to agentd-terminal/1 on the agent's socket
// (docs/daemon-and-cli.md, "Terminals"). Both directions carry the same framing: one type byte, a
// 4-byte big-endian payload length, the payload. Terminal bytes travel as they are; control
// messages are one JSON object each.
//
//   client -> agentd   0x01 input (bytes for the job's terminal)   0x02 resize {"cols","rows"}   0x03 detach
//   agentd -> client   0x11 output (bytes the job wrote)            0x12 event {"type": ...}

/** The `Upgrade` token of the attach protocol. */
export const PROTOCOL = 'agentd-terminal/1';

/** Client to agentd: bytes for the job's terminal. */
export const INPUT = 0x01;
/** Client to agentd: `{"cols","rows"}`. */
export const RESIZE = 0x02;
/** Client to agentd: it goes; the job runs on. */
export const DETACH = 0x03;
/** agentd to client: bytes the job wrote. */
export const OUTPUT = 0x11;
/** agentd to client: one TerminalEvent as JSON. */
export const EVENT = 0x12;

/** A frame larger than this is a broken peer, not a terminal: the connection is closed. */
export const MAX_FRAME_BYTES = 1024 * 1024;
const HEADER_BYTES = 5;

/** What agentd tells the attached client besides the job's output. */
export type TerminalEvent =
  /** First frame of every attach: which job this is, and what the detach key is. */
  | { readonly type: 'attached'; readonly cgroup: string; readonly hierarchy: string; readonly pid: number; readonly replayedBytes: number }
  /** The job ended: its terminal is closed and freed. `exitCode` is CRIU's, see `message`. */
  | { readonly type: 'ended'; readonly message: string; readonly exitCode?: number; readonly signal?: number }
  /** The session closes while the job runs on (agentd stops, or another client took it over). */
  | { readonly type: 'closed'; readonly message: string };

/** A terminal's size in character cells. */
export interface Size {
  readonly cols: number;
  readonly rows: number;
}

/** One frame of `type` carrying `payload` (text is sent as UTF-8). */
export function frame(type: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(body.length, 1);
  return Buffer.concat([header, body]);
}

/** An EVENT frame. */
export function eventFrame(event: TerminalEvent): Buffer {
  return frame(EVENT, JSON.stringify(event));
}

/** A RESIZE frame. */
export function resizeFrame(size: Size): Buffer {
  return frame(RESIZE, JSON.stringify({ cols: size.cols, rows: size.rows }));
}

/** A terminal size as sent in a resize frame or a query: whole numbers from 1 to 10000, else undefined. */
export function parseSize(cols: unknown, rows: unknown): Size | undefined {
  const ok = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 10_000;
  return ok(cols) && ok(rows) ? { cols, rows } : undefined;
}

/** Cuts a byte stream into frames; throws on a frame over MAX_FRAME_BYTES. */
export class FrameReader {
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly onFrame: (type: number, payload: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    while (this.buffered.length >= HEADER_BYTES) {
      const length = this.buffered.readUInt32BE(1);
      if (length > MAX_FRAME_BYTES) throw new Error(`a frame of ${length} bytes is larger than the ${MAX_FRAME_BYTES}-byte limit`);
      if (this.buffered.length < HEADER_BYTES + length) return;
      const type = this.buffered.readUInt8(0);
      const payload = this.buffered.subarray(HEADER_BYTES, HEADER_BYTES + length);
      this.buffered = this.buffered.subarray(HEADER_BYTES + length);
      this.onFrame(type, payload);
    }
  }
}
