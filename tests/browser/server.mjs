// Starting the arena binary for the browser tests.

import { spawn } from 'node:child_process';

/**
 * Start `bin` with `args` and resolve when it prints its address: `{ port, child, exited,
 * log() }`. Rejects with the server's output if it exits or prints nothing within 10 s.
 */
export function startServer(bin, args) {
  return new Promise((resolveStarted, reject) => {
    const child = spawn(bin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    const exited = new Promise((r) => child.once('exit', r));
    let log = '';
    let out = '';
    const timer = setTimeout(() => {
      reject(new Error(`arena server did not print its address within 10 s\n${log}`));
    }, 10_000);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      out += chunk;
      log += chunk;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolveStarted({ port: Number(m[1]), child, exited, log: () => log });
      }
    });
    child.stderr.on('data', (chunk) => {
      log += chunk;
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start arena server ${bin}: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`arena server exited early (code ${code}, signal ${signal})\n${log}`));
    });
  });
}

/** SIGTERM the server (SIGKILL after 3 s) and wait for it to exit. */
export async function stopServer(server) {
  const { child, exited } = server;
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(killer);
  }
}
