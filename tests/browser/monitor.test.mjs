// Browser test of the monitor page (`/monitor`): two players of the arena demo in two
// browser contexts, the monitor in a third. The page must list the room with the numbers
// the server reports, show its users, sessions and state, and disconnect a user; without the
// token everything is refused. A screenshot of the page is left in artifacts/monitor.png.
//
//   ARENA_BIN=../../target/debug/partyroom-arena node --test monitor.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer, stopServer } from './server.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, 'artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'];
const TOKEN = randomBytes(12).toString('hex');

let server = null;
let browser = null;
let baseUrl = null;


before(async () => {
  const bin = process.env.ARENA_BIN;
  if (!bin) throw new Error('ARENA_BIN is not set (e.g. ../../target/debug/partyroom-arena)');
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}`);
  server = await startServer(resolve(bin), ['--port', '0', '--memory', '--monitor-token', TOKEN]);
  const port = server.port;
  baseUrl = `http://127.0.0.1:${port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 15_000 });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await stopServer(server);
});

async function openPlayer(url, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  await context.addInitScript((n) => {
    try {
      localStorage.setItem('partyroom.name', n);
    } catch (_) {}
  }, name);
  const page = await context.newPage();
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => window.partyroom && window.partyroom.pId != null, null, { timeout: 10_000 });
  return { context, page, id: await page.evaluate(() => window.partyroom.pId) };
}

const api = (path, init = {}) =>
  fetch(`${baseUrl}/monitor/api${path}`, { ...init, headers: { Authorization: `Bearer ${TOKEN}`, ...(init.headers || {}) } });

test('the monitor refuses everyone without the token', async () => {
  for (const path of ['/monitor', '/monitor?token=wrong', '/monitor/api/rooms', '/monitor/api/rooms/main/x']) {
    const r = await fetch(baseUrl + path);
    assert.equal(r.status, 401, `${path} without the token`);
  }
  const r = await fetch(`${baseUrl}/monitor/api/rooms`, { headers: { Authorization: 'Bearer wrong' } });
  assert.equal(r.status, 401, 'a wrong bearer token');
  const post = await fetch(`${baseUrl}/monitor/api/rooms/main/x/users/y/disconnect`, { method: 'POST' });
  assert.equal(post.status, 401, 'disconnect without the token');
  assert.equal((await api('/rooms/main/no-such-room')).status, 404, 'a room not running');
});

test('the monitor shows live rooms, a room inspector, and disconnects a user', { timeout: 60_000 }, async (t) => {
  const room = `mon-${randomBytes(4).toString('hex')}`;
  const key = `main/${room}`;
  const alice = await openPlayer(`${baseUrl}/rooms/${room}`, 'Alice');
  const bob = await openPlayer(`${baseUrl}/rooms/${room}`, 'Bob');
  const monitorContext = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  try {
    // Some traffic: Alice walks right for a moment.
    await alice.page.keyboard.down('ArrowRight');
    await alice.page.waitForTimeout(400);
    await alice.page.keyboard.up('ArrowRight');

    const page = await monitorContext.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e));
    await page.goto(`${baseUrl}/monitor?token=${TOKEN}`, { waitUntil: 'domcontentloaded' });
    const row = page.locator(`tr.room[data-room="${key}"]`);
    await row.waitFor({ timeout: 10_000 });
    await page.waitForFunction(
      (key) => document.querySelector(`tr.room[data-room="${key}"] [data-field="users"]`)?.textContent === '2',
      key,
      { timeout: 10_000 },
    );

    // The numbers shown are the server's.
    const listed = (await (await api('/rooms')).json()).rooms.find((r) => `${r.party}/${r.room}` === key);
    assert.ok(listed, 'the API lists the room');
    assert.equal(listed.users, 2);
    assert.equal(listed.connections, 2);
    assert.ok(listed.messages > 0, `messages were handled: ${listed.messages}`);
    assert.ok(listed.stateBytes > 0);
    const shown = async (field) => row.locator(`[data-field="${field}"]`).textContent();
    assert.equal(await shown('users'), String(listed.users));
    assert.equal(await shown('connections'), String(listed.connections));
    assert.equal(await shown('sessions'), String(listed.sessions));

    // The inspector: users, sessions, state.
    await row.click();
    await page.waitForFunction(() => document.querySelectorAll('#users tr[data-user]').length === 2, null, { timeout: 10_000 });
    const users = await page.locator('#users tr[data-user]').evaluateAll((rows) => rows.map((r) => r.dataset.user).sort());
    assert.deepEqual(users, [alice.id, bob.id].sort());
    const state = JSON.parse(await page.locator('#state').textContent());
    assert.ok(state.players[alice.id] && state.players[bob.id], 'the state lists both players');
    assert.equal(state.players[alice.id].name, 'Alice');
    const inspected = await (await api(`/rooms/main/${room}`)).json();
    assert.equal(inspected.connections.length, 2);
    assert.ok(!JSON.stringify(inspected).includes('privateId'), 'no private session id is shown');
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'monitor.png'), fullPage: true });

    // Disconnect Bob from the page: his socket closes (his page may reconnect: a new connection).
    const before = inspected.connections.find((c) => c.user === bob.id).conn;
    const closed = page.waitForResponse((r) => r.url().includes('/disconnect') && r.request().method() === 'POST');
    await page.locator(`#users button[data-user="${bob.id}"]`).click();
    const answer = await (await closed).json();
    assert.equal(answer.closed, 1, 'one connection closed');
    const deadline = Date.now() + 10_000;
    for (;;) {
      const now = await (await api(`/rooms/main/${room}`)).json();
      const conn = now.connections.find((c) => c.user === bob.id);
      if (!conn || conn.conn !== before) break;
      assert.ok(Date.now() < deadline, `Bob's connection ${before} is still open`);
      await new Promise((r) => setTimeout(r, 100));
    }
    t.diagnostic(`Bob (connection ${before}) disconnected by the monitor`);
    // A user nobody is connected as: nothing to close, nothing else touched.
    const nobody = await api(`/rooms/main/${room}/users/nobody/disconnect`, { method: 'POST' });
    assert.equal(nobody.status, 200);
    assert.equal((await nobody.json()).closed, 0);
    const stillAlice = (await (await api(`/rooms/main/${room}`)).json()).connections.some((c) => c.user === alice.id);
    assert.ok(stillAlice, 'Alice is still connected');
    assert.deepEqual(errors, [], 'no script errors on the monitor page');
  } finally {
    await monitorContext.close();
    await alice.context.close();
    await bob.context.close();
  }
});
