// Browser end-to-end test for the partyroom arena demo.
//
// Starts the arena server (ARENA_BIN, with `--port 0 --memory`), opens the demo
// page in two separate browser contexts (= two players) on the same room, moves
// player 1 with real mouse and keyboard input, and checks that player 2 sees it.
//
//   ARENA_BIN=../../target/debug/partyroom-arena node --test
//
// Env: ARENA_BIN (required) path to the partyroom-arena binary;
//      CHROMIUM (optional) browser executable, default /usr/bin/chromium.

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
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Logical arena size (canvas coordinates used by the page and the server).
const W = 900;
const H = 560;
const PR = 16; // player radius: the server clamps positions to [16,884]x[16,544]
const clampX = (x) => Math.min(W - PR, Math.max(PR, x));
const clampY = (y) => Math.min(H - PR, Math.max(PR, y));

let server = null;
let browser = null;
let baseUrl = null;


before(async () => {
  const bin = process.env.ARENA_BIN;
  if (!bin) {
    throw new Error(
      'ARENA_BIN is not set: build the demo with `cargo build -p partyroom-arena` and run e.g.\n' +
        '  ARENA_BIN=../../target/debug/partyroom-arena node --test',
    );
  }
  const binPath = resolve(bin);
  if (!existsSync(binPath)) throw new Error(`ARENA_BIN=${bin} does not exist (resolved to ${binPath})`);
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM=/path/to/chrome`);
  }
  server = await startServer(binPath, ['--port', '0', '--memory']);
  const port = server.port;
  baseUrl = `http://127.0.0.1:${port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 15_000,
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await stopServer(server);
});

/** A fresh browser context (own localStorage = own session) with a fixed display name. */
async function openPlayer(url, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript((n) => {
    try {
      if (!localStorage.getItem('partyroom.name')) localStorage.setItem('partyroom.name', n);
    } catch (_) {
      /* about:blank etc. */
    }
  }, name);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  return { context, page, errors };
}

async function waitOnline(page) {
  await page.waitForSelector('body[data-status="online"]', { timeout: 10_000 });
  await page.waitForFunction(() => window.partyroom && window.partyroom.pId != null, null, { timeout: 10_000 });
  return page.evaluate(() => window.partyroom.pId);
}

/** Screen position of a logical arena point on the page's canvas. */
async function arenaToScreen(page, x, y) {
  const box = await page.locator('#arena').boundingBox();
  assert.ok(box && box.width > 0 && box.height > 0, 'canvas has a layout box');
  return { x: box.x + (x * box.width) / W, y: box.y + (y * box.height) / H };
}

/**
 * Wait until `page` sees player `id` at a position matching `want`
 * ({ x?, y?, minX?, tol? }; x/y within `tol` px, default 3); returns that position.
 */
async function waitForPlayer(page, id, want, what) {
  try {
    const handle = await page.waitForFunction(
      ({ id, want }) => {
        const ps = window.partyroom.state.players;
        const p = ps && ps[id];
        if (!p || typeof p.x !== 'number' || typeof p.y !== 'number' || p.x < 0 || p.y < 0) return false;
        const tol = want.tol ?? 3;
        if (want.x != null && Math.abs(p.x - want.x) > tol) return false;
        if (want.y != null && Math.abs(p.y - want.y) > tol) return false;
        if (want.minX != null && p.x < want.minX) return false;
        return { x: p.x, y: p.y };
      },
      { id, want },
      { timeout: 10_000, polling: 50 },
    );
    return await handle.jsonValue();
  } catch (err) {
    const seen = await page
      .evaluate((id) => JSON.stringify(window.partyroom.state.players?.[id] ?? null), id)
      .catch(() => '?');
    throw new Error(`${what}: timed out after 10 s; the page sees player ${id} as ${seen}`, { cause: err });
  }
}

test('two browsers in one room see each other move', { timeout: 60_000 }, async (t) => {
  const room = `browser-${randomBytes(5).toString('hex')}`;
  const url = `${baseUrl}/rooms/${room}`;
  const tag = randomBytes(2).toString('hex');
  const name1 = `Alice-${tag}`;
  const name2 = `Bob-${tag}`;

  const p1 = await openPlayer(url, name1);
  const p2 = await openPlayer(url, name2);
  try {
    const [id1, id2] = await Promise.all([waitOnline(p1.page), waitOnline(p2.page)]);
    assert.ok(id1 && id2, 'both pages got a pId');
    assert.notEqual(id1, id2, 'two browser contexts must be two different players');
    assert.equal(await p1.page.evaluate(() => window.partyroom.roomId), room);
    assert.equal(await p1.page.evaluate(() => window.partyroom.name), name1);

    // Page 2 must know player 1 before we move it.
    await waitForPlayer(p2.page, id1, {}, 'player 1 spawns on page 2');

    // --- real mouse input: click arena point (200, 150) on page 1 ---
    const target = { x: 200, y: 150 };
    const pt = await arenaToScreen(p1.page, target.x, target.y);
    await p1.page.mouse.click(pt.x, pt.y);
    const tol = 3;
    const afterClick = await waitForPlayer(
      p2.page,
      id1,
      { x: clampX(target.x), y: clampY(target.y), tol },
      `player 1 moves to the clicked point (${target.x}, ${target.y})`,
    );
    assert.ok(Math.abs(afterClick.x - target.x) <= tol && Math.abs(afterClick.y - target.y) <= tol);
    t.diagnostic(`click at arena (${target.x}, ${target.y}) -> page 2 sees (${afterClick.x}, ${afterClick.y})`);

    // --- real keyboard input: hold ArrowRight for ~300 ms on page 1 ---
    // (the click focused the canvas; the page listens for keys on window)
    // Wait out the page's 300 ms "idle" window so its prediction is reconciled.
    await p1.page.waitForTimeout(350);
    await p1.page.keyboard.down('ArrowRight');
    await p1.page.waitForTimeout(300);
    await p1.page.keyboard.up('ArrowRight');
    // 240 px/s * 0.3 s = 72 px expected; demand a clear rightward move with y unchanged.
    const afterKeys = await waitForPlayer(
      p2.page,
      id1,
      { minX: afterClick.x + 30, y: afterClick.y, tol },
      'player 1 moves right with ArrowRight',
    );
    assert.ok(afterKeys.x > afterClick.x + 30 && afterKeys.x <= W - PR, `moved right: ${JSON.stringify(afterKeys)}`);
    t.diagnostic(`ArrowRight ~300 ms -> page 2 sees (${afterKeys.x}, ${afterKeys.y})`);

    // --- page 2's side panel lists player 1 by name ---
    const entry = p2.page.locator(`#players li[data-id="${id1}"] .pname`);
    await entry.waitFor({ timeout: 5_000 });
    assert.equal((await entry.textContent()).trim(), name1);
    await p2.page.waitForFunction(
      (n) => document.getElementById('players').textContent.includes(n),
      name1,
      { timeout: 5_000 },
    );
    // and the debug dump agrees
    const debug = JSON.parse(await p2.page.locator('#debug-state').textContent());
    assert.equal(debug[id1]?.name, name1);
    assert.equal(debug[id2]?.name, name2);

    // --- reverse direction: page 2 clicks, page 1 sees it (also keeps the two
    // players apart in the screenshot, since spawn points are random) ---
    const target2 = { x: 650, y: 420 };
    const pt2 = await arenaToScreen(p2.page, target2.x, target2.y);
    await p2.page.mouse.click(pt2.x, pt2.y);
    const seen2 = await waitForPlayer(
      p1.page,
      id2,
      { x: target2.x, y: target2.y, tol },
      `player 2 moves to the clicked point (${target2.x}, ${target2.y}) as seen by page 1`,
    );
    t.diagnostic(`page 2 click at arena (${target2.x}, ${target2.y}) -> page 1 sees (${seen2.x}, ${seen2.y})`);

    // --- screenshot of page 2 ---
    mkdirSync(ARTIFACTS, { recursive: true });
    await p2.page.waitForTimeout(250); // let the canvas smoothing settle
    await p2.page.screenshot({ path: join(ARTIFACTS, 'arena.png') });

    assert.deepEqual(p1.errors.map(String), [], 'no uncaught errors on page 1');
    assert.deepEqual(p2.errors.map(String), [], 'no uncaught errors on page 2');
  } finally {
    await p1.context.close().catch(() => {});
    await p2.context.close().catch(() => {});
  }
});
