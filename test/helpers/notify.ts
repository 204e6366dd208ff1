// A stand-in for systemd's notification socket. Node cannot receive unix datagrams, so a small
// python3 program binds a datagram socket at NOTIFY_SOCKET and prints one JSON line per datagram
// (with the sender's pid from SCM_CREDENTIALS) on its stdout, which this module collects.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { makeTempDir, sleep } from './proc';

// Receives datagrams with their credentials. File descriptors that arrive with a message
// (systemd-notify's BARRIER=1 sends a pipe end and waits for it to close) are closed at once,
// as systemd does once it has processed the message.
const LISTENER = String.raw`
import array, json, os, socket, struct, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print(json.dumps({"listening": path}), flush=True)
fds_space = socket.CMSG_SPACE(16 * array.array("i").itemsize)
while True:
    data, anc, flags, _ = s.recvmsg(1 << 16, socket.CMSG_SPACE(12) + fds_space)
    pid = None
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(cdata) >= 12:
            pid = struct.unpack("iii", cdata[:12])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
    print(json.dumps({"pid": pid, "data": data.decode("utf-8", "replace")}), flush=True)
`;

export interface NotifyMessage {
  /** Sender pid as the kernel reported it (SCM_CREDENTIALS); null when absent. */
  pid: number | null;
  /** The raw datagram. */
  data: string;
  /** `VAR=value` lines of the datagram. */
  assignments: Map<string, string>;
  /** Date.now() when this process read the line. */
  receivedAt: number;
}

export interface NotifyListener {
  /** Pass as NOTIFY_SOCKET. */
  socketPath: string;
  messages(): NotifyMessage[];
  /** Resolves with the first message (already received or arriving later) that satisfies `pred`. */
  waitFor(pred: (m: NotifyMessage) => boolean, timeoutMs: number, what?: string): Promise<NotifyMessage>;
  /** Everything the listener printed on stderr (diagnostics). */
  stderr(): string;
  stop(): Promise<void>;
}

let available: boolean | undefined;

/** True when python3 (for the listener) and systemd-notify (what ncps runs) are both installed. */
export function notifyToolsAvailable(): boolean {
  if (available === undefined) {
    const py = spawnSync('python3', ['-c', 'import socket; socket.SCM_CREDENTIALS'], { stdio: 'ignore', timeout: 20_000 });
    const sd = spawnSync('systemd-notify', ['--version'], { stdio: 'ignore', timeout: 20_000 });
    available = py.status === 0 && sd.status === 0;
  }
  return available;
}

function parseAssignments(data: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of data.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/** Binds a fresh datagram socket in a temp dir and starts collecting what arrives on it. */
export async function startNotifyListener(): Promise<NotifyListener> {
  const dir = await makeTempDir('notify');
  const socketPath = path.join(dir, 'notify.sock');
  if (Buffer.byteLength(socketPath) >= 108) throw new Error(`socket path too long for AF_UNIX: ${socketPath}`);
  const child: ChildProcess = spawn('python3', ['-u', '-c', LISTENER, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const messages: NotifyMessage[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  let pending = '';
  let listening = false;
  let exited = false;
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  child.stdout?.on('data', (b: Buffer) => {
    pending += b.toString('utf8');
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim() === '') continue;
      const parsed = JSON.parse(line) as { listening?: string; pid?: number | null; data?: string };
      if (parsed.listening !== undefined) {
        listening = true;
      } else {
        const data = parsed.data ?? '';
        messages.push({ pid: parsed.pid ?? null, data, assignments: parseAssignments(data), receivedAt: Date.now() });
      }
      for (const w of [...waiters]) w();
    }
  });
  const exit = new Promise<void>((resolve) =>
    child.on('exit', () => {
      exited = true;
      for (const w of [...waiters]) w();
      resolve();
    }),
  );

  const deadline = Date.now() + 15_000;
  while (!listening) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`notify listener did not start:\n${stderr}`);
    }
    await sleep(20);
  }

  return {
    socketPath,
    messages: () => [...messages],
    stderr: () => stderr,
    waitFor(pred, timeoutMs, what = 'notification') {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = messages.find(pred);
          if (found) {
            finish();
            resolve(found);
          } else if (exited) {
            finish();
            reject(new Error(`notify listener exited while waiting for ${what}:\n${stderr}`));
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(
            new Error(
              `no ${what} within ${timeoutMs} ms; received:\n${messages.map((m) => JSON.stringify(m.data)).join('\n') || '(nothing)'}`,
            ),
          );
        }, timeoutMs);
        const finish = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exit;
        clearTimeout(t);
      }
    },
  };
}
