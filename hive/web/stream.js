// The job stream protocol (docs/api.md), for browsers: binary output frames,
// JSON control events, resume from the last seq after a lost connection.

const HEADER = 17;
const STREAMS = { 1: "stdout", 2: "stderr" };

export function decodeFrame(data) {
  if (typeof data === "string") {
    const event = JSON.parse(data);
    return { kind: "control", first: event.seq, last: event.seq, event };
  }
  const view = new DataView(data);
  return {
    kind: "output",
    stream: STREAMS[view.getUint8(0)],
    first: Number(view.getBigUint64(1)),
    last: Number(view.getBigUint64(9)),
    bytes: new Uint8Array(data, HEADER),
  };
}

// Follows one job until its `end` event. Reconnects with backoff and resumes
// after the last seq it handled, so the page sees no gap and no repeat.
export class JobStream {
  constructor(jobId, { onOutput, onEvent, onStatus }) {
    this.jobId = jobId;
    this.since = 0;
    this.onOutput = onOutput;
    this.onEvent = onEvent;
    this.onStatus = onStatus || (() => {});
    this.ended = false;
    this.closed = false;
    this.delay = 100;
  }

  start() {
    if (this.closed || this.ended) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/v1/jobs/${this.jobId}/stream?since=${this.since}`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => { this.delay = 100; this.onStatus("live"); };
    ws.onmessage = (message) => this.handle(decodeFrame(message.data));
    ws.onclose = (close) => {
      if (this.ended || this.closed) return;
      if (close.code >= 4400 && close.code < 4500) {
        this.onStatus(`refused: ${close.reason}`);
        return;
      }
      this.onStatus(`reconnecting in ${(this.delay / 1000).toFixed(1)} s`);
      setTimeout(() => this.start(), this.delay);
      this.delay = Math.min(this.delay * 2, 2000);
    };
  }

  handle(frame) {
    if (frame.last <= this.since) return; // replayed after a reconnect: already shown
    if (frame.first !== this.since + 1) {
      this.onStatus(`gap in stream at seq ${this.since + 1}; resyncing`);
      this.ws.close();
      return;
    }
    this.since = frame.last;
    if (frame.kind === "output") {
      this.onOutput(frame.stream, frame.bytes);
    } else {
      if (frame.event.type === "end") this.ended = true;
      this.onEvent(frame.event);
    }
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close();
  }
}
