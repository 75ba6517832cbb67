// Shared helpers for the partyroom compatibility tests.
//
// This module has no side effects on import (Node 20's `node --test test/`
// also loads every .mjs file inside a `test/` directory as a test file, so this
// one shows up in the report as an empty, passing entry).

import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';

export { sleep };

/** Arena constants (see the arena example's spec). */
export const ARENA = Object.freeze({
  width: 900,
  height: 560,
  minX: 16,
  maxX: 884,
  minY: 16,
  maxY: 544,
  collectRadius: 37,
  sessionExpiryMs: 2000,
});

export const PID_RE = /^[A-Za-z0-9]{8}$/;

const LISTEN_RE = /listening on http:\/\/127\.0\.0\.1:(\d+)/;

/** A fresh room id matching [A-Za-z0-9_-]. */
export function uniqueRoomId(prefix = 'compat') {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** A fresh session id (what browsers would keep in localStorage). */
export function uniqueSessionId(prefix = 'sess') {
  return `${prefix}-${randomBytes(8).toString('hex')}`;
}

/**
 * Start the server under test: `$ARENA_BIN --port 0 --memory`.
 * Resolves once it printed `listening on http://127.0.0.1:<port>` on stdout.
 *
 * Options: `extraArgs` are appended to the command line; `memory: false` leaves
 * out `--memory` (cluster mode's `--cluster` conflicts with it); `env` entries
 * override the inherited environment (an `undefined` value removes a variable);
 * `name` tags the output echoed with COMPAT_VERBOSE.
 * @returns {Promise<{url: string, port: number, proc: import('node:child_process').ChildProcess, output: () => string, stop: (opts?: {graceMs?: number}) => Promise<{code: number|null, signal: string|null, killed: boolean}>}>}
 */
export async function startServer({
  timeoutMs = 20_000,
  extraArgs = [],
  memory = true,
  env = {},
  name = 'arena',
} = {}) {
  const bin = process.env.ARENA_BIN;
  if (!bin) {
    throw new Error(
      'ARENA_BIN is not set: it must be the path to the partyroom arena server binary ' +
        '(e.g. ARENA_BIN=/path/to/target/debug/arena npm test). ' +
        'The tests spawn it as `$ARENA_BIN --port 0 --memory`.',
    );
  }
  try {
    accessSync(bin, fsConstants.X_OK);
  } catch (err) {
    throw new Error(`ARENA_BIN=${bin} is not an executable file (${err.code ?? err.message})`);
  }

  const verbose = !!process.env.COMPAT_VERBOSE;
  const args = ['--port', '0', ...(memory ? ['--memory'] : []), ...extraArgs];
  const childEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(childEnv)) if (v === undefined) delete childEnv[k];
  const proc = spawn(bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv,
  });

  let log = '';
  const append = (stream, line) => {
    log += `[${stream}] ${line}\n`;
    if (log.length > 200_000) log = log.slice(-100_000);
    if (verbose) process.stderr.write(`[${name} ${stream}] ${line}\n`);
  };

  let exited = false;
  let exitInfo = null;
  const exitPromise = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exited = true;
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });

  // Keep draining both pipes for the whole lifetime of the process so a
  // chatty server never blocks on a full pipe.
  const stderrLines = createInterface({ input: proc.stderr });
  stderrLines.on('line', (line) => append('stderr', line));
  const stdoutLines = createInterface({ input: proc.stdout });

  const port = await new Promise((resolve, reject) => {
    let settled = false;
    const finish = (fn, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn(value);
    };
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      finish(
        reject,
        new Error(
          `arena server did not print "listening on http://127.0.0.1:<port>" within ${timeoutMs} ms.\n` +
            `command: ${bin} ${args.join(' ')}\noutput so far:\n${log}`,
        ),
      );
    }, timeoutMs);
    stdoutLines.on('line', (line) => {
      append('stdout', line);
      const m = LISTEN_RE.exec(line);
      if (m) finish(resolve, Number(m[1]));
    });
    proc.once('error', (err) => {
      finish(reject, new Error(`failed to spawn ARENA_BIN=${bin}: ${err.message}`));
    });
    exitPromise.then(({ code, signal }) => {
      finish(
        reject,
        new Error(
          `arena server exited (code ${code}, signal ${signal}) before it was listening.\n` +
            `command: ${bin} ${args.join(' ')}\noutput:\n${log}`,
        ),
      );
    });
  });

  /**
   * SIGTERM, then SIGKILL if it is still running after `graceMs`. Resolves with
   * the exit info (`{code, signal}`; `killed: true` if SIGKILL was needed).
   */
  async function stop({ graceMs = 5_000 } = {}) {
    if (exited) return { ...exitInfo, killed: false };
    let killed = false;
    proc.kill('SIGTERM');
    const killer = setTimeout(() => {
      if (!exited) {
        killed = true;
        proc.kill('SIGKILL');
      }
    }, graceMs);
    await exitPromise;
    clearTimeout(killer);
    return { ...exitInfo, killed };
  }

  /**
   * Run `fn`; if it fails and the server has died meanwhile, report the
   * server's death (with its output) instead of a confusing socket error.
   */
  async function explainFailure(fn) {
    try {
      return await fn();
    } catch (err) {
      await sleep(100);
      assertAlive();
      throw err;
    }
  }

  /** Throw if the server process has exited (e.g. crashed during a test). */
  function assertAlive() {
    if (exited) {
      throw new Error(
        `arena server exited unexpectedly (code ${exitInfo.code}, signal ${exitInfo.signal}); ` +
          `output tail:\n${log.slice(-4_000)}`,
      );
    }
  }

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    proc,
    output: () => log,
    exitInfo: () => exitInfo,
    assertAlive,
    explainFailure,
    stop,
  };
}

/**
 * Deep merge a sync patch into `target`, the way the official client's
 * `load(room, value, true)` does:
 *   - the value "$delete" deletes the key;
 *   - a plain object merges recursively into a plain object (a non-object or
 *     missing target value is replaced by a fresh object first);
 *   - everything else (numbers, strings, booleans, null, arrays) replaces.
 * Returns `target` (mutated in place).
 */
export function deepMerge(target, patch) {
  if (!isPlainObject(patch)) return target;
  for (const [key, value] of Object.entries(patch)) {
    if (value === '$delete') {
      delete target[key];
    } else if (isPlainObject(value)) {
      if (!isPlainObject(target[key])) target[key] = {};
      deepMerge(target[key], value);
    } else {
      target[key] = value;
    }
  }
  return target;
}

export function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** JSON deep copy, for snapshots of state objects. */
export function clone(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

/**
 * Poll `fn` until it returns a truthy value (returned) or the timeout expires.
 * If `fn` throws, the last error is kept and reported on timeout.
 */
export async function eventually(fn, timeoutMs = 5_000, { interval = 20, message } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      lastErr = undefined;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const msg = `${message ?? 'condition'} not met within ${timeoutMs} ms`;
      if (lastErr) {
        lastErr.message = `${msg}: ${lastErr.message}`;
        throw lastErr;
      }
      throw new Error(msg);
    }
    await sleep(interval);
  }
}

/**
 * Open a plain `ws` connection to ws://127.0.0.1:<port>/parties/main/<roomId>?<query>.
 * `query` may be a string ("id=a&name=b") or an object ({id, name}).
 * Resolves once the socket is open. Every text frame is JSON-parsed into
 * `frames`; sync frames are also deep-merged into `state`.
 */
export async function connectWs(port, roomId, query = '', { party = 'main', timeoutMs = 5_000 } = {}) {
  const qs =
    typeof query === 'string'
      ? query.replace(/^\?/, '')
      : new URLSearchParams(
          Object.entries(query ?? {}).filter(([, v]) => v !== undefined && v !== null),
        ).toString();
  const url = `ws://127.0.0.1:${port}/parties/${party}/${roomId}${qs ? `?${qs}` : ''}`;
  const ws = new WebSocket(url);
  // Never let a socket error crash the runner; failures surface through
  // the open promise below or through `closeInfo`.
  ws.on('error', () => {});

  const frames = [];
  const badFrames = [];
  const state = {};
  const waiters = new Set();
  let closeInfo = null;

  const notify = () => {
    for (const w of [...waiters]) w.check();
  };

  ws.on('message', (data, isBinary) => {
    const text = isBinary ? Buffer.from(data).toString('utf8') : data.toString();
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      badFrames.push({ text, isBinary });
      notify();
      return;
    }
    frames.push(parsed);
    if (parsed && parsed.type === 'sync' && isPlainObject(parsed.value)) {
      deepMerge(state, parsed.value);
    }
    notify();
  });

  const closed = new Promise((resolve) => {
    ws.once('close', (code, reason) => {
      closeInfo = { code, reason: reason.toString() };
      resolve(closeInfo);
      notify();
    });
  });

  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`timed out opening ${url}`));
    }, timeoutMs);
    ws.once('open', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`WebSocket upgrade to ${url} refused: HTTP ${res.statusCode}`));
      ws.terminate();
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`WebSocket error for ${url}: ${err.message}`));
    });
  });

  /**
   * Wait for a frame matching `predicate(frame, index, frames)`. Frames that
   * already arrived are checked too (starting at `from`). Resolves with the frame.
   */
  function waitFor(predicate, timeoutMs2 = 5_000, { from = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const w = {
        check() {
          for (let i = from; i < frames.length; i++) {
            if (predicate(frames[i], i, frames)) {
              cleanup();
              resolve(frames[i]);
              return;
            }
          }
        },
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `waitFor: no matching frame within ${timeoutMs2} ms on ${url}; ` +
              `got ${frames.length} frame(s): ${truncate(JSON.stringify(frames.slice(from)))}`,
          ),
        );
      }, timeoutMs2);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(w);
      };
      waiters.add(w);
      w.check();
    });
  }

  /** Wait until `predicate(state)` is truthy (state = merged sync patches). */
  function waitForState(predicate, timeoutMs2 = 5_000) {
    return new Promise((resolve, reject) => {
      const w = {
        check() {
          let ok = false;
          try {
            ok = predicate(state);
          } catch {
            ok = false;
          }
          if (ok) {
            cleanup();
            resolve(state);
          }
        },
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `waitForState: condition not met within ${timeoutMs2} ms on ${url}; ` +
              `state: ${truncate(JSON.stringify(state))}`,
          ),
        );
      }, timeoutMs2);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(w);
      };
      waiters.add(w);
      w.check();
    });
  }

  const client = {
    url,
    ws,
    frames,
    badFrames,
    state,
    closed,
    get closeInfo() {
      return closeInfo;
    },
    get isOpen() {
      return ws.readyState === WebSocket.OPEN;
    },
    /** pId from the first frame of this socket. */
    get pId() {
      return frames[0]?.value?.pId;
    },
    waitFor,
    waitForState,
    /** Send `{action, value}` as JSON (the official client's `emit` format). */
    emit(action, value) {
      ws.send(JSON.stringify({ action, value }));
    },
    send(obj) {
      ws.send(JSON.stringify(obj));
    },
    sendRaw(text) {
      ws.send(text);
    },
    /** Close and wait for the close handshake to finish. */
    async close(code = 1000) {
      if (ws.readyState === WebSocket.CLOSED) return closeInfo;
      ws.close(code);
      const timer = setTimeout(() => ws.terminate(), 3_000);
      const info = await closed;
      clearTimeout(timer);
      return info;
    },
  };
  return client;
}

/** Fetch JSON from the server under test; returns { status, headers, body, text }. */
export async function httpJson(baseUrl, path, init = {}) {
  const res = await fetch(`${baseUrl}${path}`, init);
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, body, text };
}

/** Clamp a star position into the reachable area of the arena. */
export function clampToArena({ x, y }) {
  return {
    x: Math.min(ARENA.maxX, Math.max(ARENA.minX, x)),
    y: Math.min(ARENA.maxY, Math.max(ARENA.minY, y)),
  };
}

/** Assert-style check of one player object; returns a list of problems. */
export function playerProblems(p) {
  const problems = [];
  if (!isPlainObject(p)) return [`player is not an object: ${JSON.stringify(p)}`];
  if (typeof p.name !== 'string') problems.push(`name not a string: ${JSON.stringify(p.name)}`);
  if (typeof p.connected !== 'boolean') problems.push(`connected not a bool: ${JSON.stringify(p.connected)}`);
  if (typeof p.x !== 'number' || !Number.isFinite(p.x)) problems.push(`x not a number: ${JSON.stringify(p.x)}`);
  if (typeof p.y !== 'number' || !Number.isFinite(p.y)) problems.push(`y not a number: ${JSON.stringify(p.y)}`);
  if (typeof p.color !== 'string' || p.color.length === 0) problems.push(`color not a non-empty string: ${JSON.stringify(p.color)}`);
  if (!Number.isInteger(p.score)) problems.push(`score not an integer: ${JSON.stringify(p.score)}`);
  return problems;
}

function truncate(s, n = 2_000) {
  return s && s.length > n ? `${s.slice(0, n)}…` : s;
}
