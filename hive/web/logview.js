// A log view that stays fast with 100k+ lines: it keeps the lines in an array
// and puts only the visible window (plus a margin) into the DOM.

const LINE_HEIGHT = 18;
const MARGIN = 40;

export class LogView {
  constructor(container) {
    this.container = container;
    this.container.classList.add("log");
    this.spacer = document.createElement("div");
    this.spacer.className = "spacer";
    this.window = document.createElement("div");
    this.window.className = "window";
    this.spacer.append(this.window);
    this.container.append(this.spacer);
    this.lines = [];   // [{cls, text}]
    this.pending = { stdout: "", stderr: "" };
    this.decoders = {
      stdout: new TextDecoder("utf-8", { fatal: false }),
      stderr: new TextDecoder("utf-8", { fatal: false }),
    };
    this.stick = true; // follow the bottom until the user scrolls up
    this.scheduled = false;
    this.container.addEventListener("scroll", () => {
      const bottom = this.container.scrollHeight - this.container.clientHeight;
      this.stick = this.container.scrollTop >= bottom - LINE_HEIGHT;
      this.schedule();
    });
  }

  get lineCount() { return this.lines.length; }

  output(stream, bytes) {
    const text = this.pending[stream] + this.decoders[stream].decode(bytes, { stream: true });
    const parts = text.split("\n");
    this.pending[stream] = parts.pop();
    for (const part of parts) this.lines.push({ cls: stream, text: part });
    this.schedule();
  }

  note(text) {
    this.flushPartial();
    this.lines.push({ cls: "hive", text });
    this.schedule();
  }

  flushPartial() {
    for (const stream of ["stdout", "stderr"]) {
      if (this.pending[stream]) {
        this.lines.push({ cls: stream, text: this.pending[stream] });
        this.pending[stream] = "";
      }
    }
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => { this.scheduled = false; this.render(); });
  }

  render() {
    const total = this.lines.length;
    this.spacer.style.height = `${total * LINE_HEIGHT}px`;
    if (this.stick) this.container.scrollTop = this.container.scrollHeight;
    const top = Math.floor(this.container.scrollTop / LINE_HEIGHT);
    const visible = Math.ceil(this.container.clientHeight / LINE_HEIGHT);
    const start = Math.max(0, top - MARGIN);
    const end = Math.min(total, top + visible + MARGIN);
    this.window.style.top = `${start * LINE_HEIGHT}px`;
    const fragment = document.createDocumentFragment();
    for (let i = start; i < end; i++) {
      const div = document.createElement("div");
      div.className = `line ${this.lines[i].cls}`;
      div.textContent = this.lines[i].text;
      fragment.append(div);
    }
    this.window.replaceChildren(fragment);
  }
}
