import assert from 'node:assert/strict';
import { after, test as nodeTest } from 'node:test';

import { ApiError, applyEntry, isMessage, SendError } from '../src/index.js';
import { msgpackCodec } from '../src/msgpack.js';
import { client, EXPIRING, friends, LIMITED, once, PASSWORD, Proxy, SERVER, signup, sleep, until } from './helpers.js';

/** Each test within its own bound, so a lost message fails it instead of hanging the run. */
const test = (name, fn) => nodeTest(name, { timeout: 30000 }, fn);

const fast = { backoff: { initialMs: 40, maxMs: 400 } };
const clients = [];
/** A client that is closed when the tests end. */
function open(...args) {
  const c = client(...args);
  clients.push(c);
  c.connect();
  return c;
}
after(() => clients.forEach((c) => c.close()));

/** Every `message` event of `c`, in the order they came. */
function record(c) {
  const got = [];
  c.on('message', (m) => got.push(m));
  return got;
}

test('a send whose ack was lost is stored once after the reconnect resends it', async () => {
  const [a, b, chat] = await friends();
  const proxy = await Proxy.start();
  const alice = open(a, proxy.url, fast);
  alice.track(chat, 0);
  const seen = record(alice);
  await once(alice, 'state', (s) => s.state === 'open');
  proxy.mute = true; // the server stores the message; its ack never reaches alice
  const sent = alice.send(chat, 'hello once');
  await until(async () => (await b.history(chat)).messages.length === 1, 'the message to be stored');
  assert.equal(alice.outbox.size, 1, 'no ack came, so the send waits in the outbox');
  proxy.mute = false;
  proxy.cut();
  const message = await sent;
  const { messages } = await b.history(chat);
  assert.deepEqual(messages.map((m) => m.body), ['hello once'], 'stored once');
  assert.equal(message.id, messages[0].id, 'the ack is the stored message');
  assert.deepEqual(seen.map((m) => m.seq), [1], 'and it reached alice once');
  assert.equal(alice.outbox.size, 0);
  await proxy.stop();
});

test('a reconnect while another client sends yields every message once and in order', async () => {
  const [a, b, chat] = await friends();
  const proxy = await Proxy.start();
  const bob = open(b, proxy.url, fast);
  bob.track(chat, 0);
  const seen = record(bob);
  await once(bob, 'state', (s) => s.state === 'open');
  const alice = open(a);
  await once(alice, 'state', (s) => s.state === 'open');
  const total = 150;
  let cuts = 0;
  for (let i = 1; i <= total; i += 1) {
    await alice.send(chat, `m${i}`);
    if (i % 40 === 0) {
      proxy.cut();
      cuts += 1;
    }
  }
  await until(() => seen.length >= total, `${total} messages at bob`);
  await sleep(200);
  assert.equal(cuts, 3);
  assert.deepEqual(
    seen.map((m) => m.seq),
    Array.from({ length: total }, (_, i) => i + 1),
    'every seq once, in order',
  );
  assert.deepEqual(seen.map((m) => m.body), Array.from({ length: total }, (_, i) => `m${i + 1}`));
  assert.equal(bob.positions.get(chat), total);
  await proxy.stop();
});

test('backoff grows while the server is unreachable and resets after a connection', async () => {
  const api = await signup();
  const proxy = await Proxy.start();
  proxy.refuse = true;
  const c = open(api, proxy.url, { backoff: { initialMs: 40, maxMs: 400, factor: 2 } });
  const waits = [];
  c.on('reconnecting', (r) => waits.push(r));
  await until(() => waits.length >= 6, 'six reconnect attempts');
  for (const { attempt, delay } of waits.slice(0, 6)) {
    const base = Math.min(400, 40 * 2 ** (attempt - 1));
    assert.ok(delay >= base / 2 && delay <= base, `attempt ${attempt}: ${delay} ms within [${base / 2}, ${base}]`);
  }
  assert.ok(waits[4].delay > waits[0].delay * 3, 'later waits are longer');
  proxy.refuse = false;
  await once(c, 'state', (s) => s.state === 'open');
  waits.length = 0;
  proxy.cut();
  await until(() => waits.length >= 1, 'a reconnect after the cut');
  assert.equal(waits[0].attempt, 1, 'the count starts again');
  assert.ok(waits[0].delay <= 40, `the first wait again: ${waits[0].delay}`);
  await proxy.stop();
});

test('a client closed while it asks why its socket failed stays closed', async () => {
  const api = await signup();
  const proxy = await Proxy.start();
  proxy.refuse = true;
  let answer;
  const asked = new Promise((resolve) => {
    answer = resolve;
  });
  let asking;
  const c = open(api, proxy.url, {
    ...fast,
    // The question is still out when the client is closed.
    tokenValid: () => {
      answer();
      return new Promise((resolve) => {
        asking = resolve;
      });
    },
  });
  const waits = [];
  c.on('reconnecting', (r) => waits.push(r));
  await asked;
  c.close();
  asking(true);
  await sleep(300);
  assert.equal(c.state, 'closed', 'close wins');
  assert.deepEqual(waits, [], 'no reconnect was scheduled');
  await proxy.stop();
});

test('a logged-out token is not reconnected', async () => {
  const api = await signup();
  const c = open(api, SERVER, fast);
  await once(c, 'state', (s) => s.state === 'open');
  const closed = once(c, 'state', (s) => s.state === 'closed');
  await api.logout();
  assert.deepEqual(await closed, { state: 'closed', reason: 'revoked', code: 4002 });
  await sleep(300);
  assert.equal(c.state, 'closed', 'no reconnect');
});

test('a refused token is refreshed through the callback, or the client stops', async () => {
  const api = await signup();
  const stuck = open({ token: 'not-a-token' }, SERVER, fast);
  const stopped = await once(stuck, 'state', (s) => s.state === 'closed');
  assert.equal(stopped.reason, 'unauthorized');
  let asked = 0;
  const refreshed = open({ token: 'not-a-token' }, SERVER, {
    ...fast,
    refreshToken: async () => {
      asked += 1;
      return api.token;
    },
  });
  await once(refreshed, 'state', (s) => s.state === 'open');
  assert.equal(asked, 1);
  assert.equal(refreshed.token, api.token);
});

test('after token expiry (4001) the client reconnects with a token from refreshToken, or stops', async () => {
  const api = await signup('exp', EXPIRING);
  let asked = 0;
  const c = open(api, EXPIRING, {
    ...fast,
    refreshToken: async () => {
      asked += 1;
      return (await api.login(api.user.username, PASSWORD)).token;
    },
  });
  const expired = once(c, 'disconnect', (d) => d.code === 4001);
  await once(c, 'state', (s) => s.state === 'open');
  await expired;
  await once(c, 'state', (s) => s.state === 'open');
  assert.ok(asked >= 1, 'the callback gave the new token');
  assert.equal(c.token, api.token, 'and the client uses it');

  const plain = open(await signup('exp', EXPIRING), EXPIRING, fast);
  const stopped = await once(plain, 'state', (s) => s.state === 'closed');
  assert.deepEqual(stopped, { state: 'closed', reason: 'expired', code: 4001 });
});

test('a send the server refuses for good rejects and leaves the outbox', async () => {
  const api = await signup();
  const c = open(api);
  await once(c, 'state', (s) => s.state === 'open');
  await assert.rejects(c.send(999999, 'nowhere'), (e) => e instanceof SendError && e.code === 'not_found');
  assert.equal(c.outbox.size, 0);
  await assert.rejects(api.chat(999999), (e) => e instanceof ApiError && e.status === 404 && e.code === 'not_found');
});

test('the library keeps order across rate_limited retries', async (t) => {
  // The limited server lets a user send 5 a second (burst 10): most of a burst of 60 is refused
  // with rate_limited at first and stored only after the client retried it.
  const api = await signup('rl', LIMITED);
  const { chat } = await api.createGroup('burst', []);
  const c = open(api, LIMITED);
  const refusals = [];
  c.on('retrying', (frame) => refusals.push(frame));
  await once(c, 'state', (s) => s.state === 'open');
  const bodies = Array.from({ length: 60 }, (_, i) => `burst ${i + 1}`);
  const acked = await Promise.all(bodies.map((body) => c.send(chat.id, body)));
  const retried = new Set(refusals.map((f) => f.ref)).size;
  t.diagnostic(`${retried} of ${bodies.length} sends refused first (${refusals.length} refusals), then retried`);
  assert.ok(retried > 0, 'some sends were refused first');
  assert.deepEqual([...new Set(refusals.map((f) => f.code))], ['rate_limited']);
  const { messages } = await api.history(chat.id, { limit: 200 });
  assert.deepEqual(messages.map((m) => m.body), bodies, 'stored in the order of the sends');
  assert.deepEqual(acked.map((m) => m.seq), bodies.map((_, i) => i + 1), 'each ack has its seq');
  assert.equal(c.outbox.size, 0);
});

/** A socket the test plays the server of: it records the frames the client writes. */
class FakeSocket {
  static last = null;
  sent = [];
  constructor() {
    FakeSocket.last = this;
    setTimeout(() => this.onopen(), 0);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close() {}
  /** A frame from the "server". */
  answer(frame) {
    this.onmessage({ data: JSON.stringify(frame) });
  }
  /** The bodies of the sends written to this socket, in order. */
  bodies() {
    return this.sent.filter((f) => f.type === 'send').map((f) => f.body);
  }
  idOf(body) {
    return this.sent.find((f) => f.body === body).client_msg_id;
  }
  ack(body, seq) {
    const { chat_id, client_msg_id } = this.sent.find((f) => f.body === body);
    this.answer({ type: 'ack', client_msg_id, message: { chat_id, seq, client_msg_id, body } });
  }
}

test('a refused send holds back only its own chat, for at least the retry_after_ms it names', async () => {
  const c = open({ token: 't' }, 'http://127.0.0.1:9', { WebSocket: FakeSocket, ...fast });
  await until(() => c.state === 'open', 'the socket to open');
  let ws = FakeSocket.last;
  const sent = ['a1', 'a2', 'b1', 'b2'].map((body) => c.send(body[0] === 'a' ? 1 : 2, body));
  assert.deepEqual(ws.bodies(), ['a1', 'b1'], "one send of each chat on the wire: the chat's oldest");

  // a1 is refused for 300 ms: chat 2 goes on meanwhile, a2 waits behind a1.
  const refused = Date.now();
  ws.answer({ type: 'error', code: 'rate_limited', message: 'slow down', ref: ws.idOf('a1'), retry_after_ms: 300 });
  ws.ack('b1', 1);
  assert.deepEqual(ws.bodies(), ['a1', 'b1', 'b2']);

  // A reconnect during the pause resends b2 (unacked) at once, a1 only after its pause, a2
  // only after a1's ack.
  ws.onclose({ code: 1006, reason: 'cut' });
  await until(() => c.state === 'open' && FakeSocket.last !== ws, 'the reconnect');
  ws = FakeSocket.last;
  assert.deepEqual(ws.bodies(), ['b2']);
  await until(() => ws.bodies().includes('a1'), 'the retry of a1');
  assert.ok(Date.now() - refused >= 300, `a1 retried ${Date.now() - refused} ms after its refusal`);
  assert.deepEqual(ws.bodies(), ['b2', 'a1']);
  ws.ack('a1', 1);
  assert.deepEqual(ws.bodies(), ['b2', 'a1', 'a2']);
  ws.ack('b2', 2);
  ws.ack('a2', 2);
  const acked = await Promise.all(sent);
  assert.deepEqual(acked.map((m) => `${m.body}:${m.seq}`), ['a1:1', 'a2:2', 'b1:1', 'b2:2']);
  assert.equal(c.outbox.size, 0);
});

test('MessagePack and JSON clients share a chat, and a new chat is followed from its start', async () => {
  const [a, b] = await friends();
  const alice = open(a, SERVER, { codec: msgpackCodec });
  const bob = open(b);
  await Promise.all([alice, bob].map((c) => once(c, 'state', (s) => s.state === 'open')));
  const seen = record(bob);
  const added = once(bob, 'chat', (c) => c.title === 'packed');
  const { chat } = await a.createGroup('packed', [b.user.id]);
  await added;
  await alice.send(chat.id, 'über msgpack');
  await until(() => seen.length === 1, 'bob to receive it');
  assert.equal(seen[0].body, 'über msgpack');
  assert.equal(seen[0].sender_id, a.user.id);
  assert.ok(await bob.ping() >= 0);
});

test('history pages backwards in ascending order', async () => {
  const [a, , chat] = await friends();
  for (let i = 1; i <= 7; i += 1) await a.sendMessage(chat, `h${i}`);
  const newest = await a.history(chat, { beforeSeq: 8, limit: 3 });
  assert.deepEqual(newest.messages.map((m) => m.seq), [5, 6, 7]);
  const older = await a.history(chat, { beforeSeq: 5, limit: 3 });
  assert.deepEqual(older.messages.map((m) => m.seq), [2, 3, 4]);
  const { chat: view } = await a.chat(chat);
  assert.equal(view.unread, 0, 'her own messages are read');
});

test("the README's echo bot befriends and answers", async () => {
  const { spawn } = await import('node:child_process');
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const example = await readFile(new URL('../examples/echo-bot.js', import.meta.url), 'utf8');
  const shown = /```js\n([\s\S]*?)```/.exec(readme)[1];
  assert.equal(shown, example.replace(/^(\/\/.*\n)+/, ''), 'the README shows the example as it is');
  const bot = spawn(process.execPath, [new URL('../examples/echo-bot.js', import.meta.url).pathname, SERVER], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    await new Promise((resolve) => bot.stdout.on('data', (d) => String(d).includes('open') && resolve()));
    const me = await signup('fan');
    await me.requestFriend('echo-bot');
    const friendsOfMine = async () => (await me.friends()).friends.map((f) => f.username);
    await until(async () => (await friendsOfMine()).includes('echo-bot'), 'the bot to accept');
    const botId = (await me.friends()).friends[0].id;
    const { chat } = await me.directChat(botId);
    const c = open(me);
    c.track(chat.id, 0);
    const seen = record(c);
    await c.send(chat.id, 'marco');
    await until(() => seen.some((m) => m.body === 'echo: marco'), 'the echo');
    assert.deepEqual(seen.map((m) => m.body), ['marco', 'echo: marco']);
  } finally {
    bot.kill();
  }
});

test('positions of more chats than one resume may name are resumed in several frames', async () => {
  const [a, b, chat] = await friends();
  await a.sendMessage(chat, 'one');
  // 1,500 positions: the real chat among chats that do not exist (each answered not_found).
  const positions = Object.fromEntries(Array.from({ length: 1500 }, (_, i) => [900000 + i, 0]));
  positions[chat] = 0;
  const c = client(b, SERVER, { positions });
  clients.push(c);
  const seen = record(c);
  const synced = once(c, 'synced', (s) => s.chat_id === chat);
  c.connect();
  await synced;
  assert.deepEqual(seen.map((m) => m.body), ['one']);
});

test('the Api refreshes its short-lived token by itself, once for concurrent callers, and its client reconnects with tickets', async () => {
  // EXPIRING's access tokens live 2 s.
  const plain = await signup('ref', EXPIRING);
  const refreshes = [];
  plain.onTokens = (tokens) => refreshes.push(tokens);
  const first = plain.refreshToken;
  await sleep(2500);
  // Three calls after expiry share one refresh.
  const answers = await Promise.all([plain.me(), plain.me(), plain.chats()]);
  assert.equal(answers[0].user.id, plain.user.id);
  assert.equal(refreshes.length, 1, 'one refresh for three callers');
  assert.notEqual(plain.refreshToken, first, 'the refresh token rotated');

  const api = await signup('ref', EXPIRING);
  const pairs = [];
  api.onTokens = (tokens) => pairs.push(tokens);
  const c = open(null, EXPIRING, { ...fast, api });
  await once(c, 'state', (s) => s.state === 'open');
  // The socket closed at its token's expiry (4001) and came back by itself, with a ticket.
  await once(c, 'disconnect', (d) => d.code === 4001);
  await once(c, 'state', (s) => s.state === 'open');
  const { chat } = await api.createGroup('still here', []);
  // Its `chat` event may come while the socket is between two 2-second tokens: follow it
  // explicitly, so the next socket resumes it either way.
  if (!c.positions.has(chat.id)) c.track(chat.id, 0);
  const got = once(c, 'message', (m) => m.chat_id === chat.id);
  await api.sendMessage(chat.id, 'after a refresh');
  assert.equal((await got).body, 'after a refresh');
  // Ending the session everywhere stops the client for good.
  const closed = once(c, 'state', (s) => s.state === 'closed');
  await api.logoutAll();
  const stopped = await closed;
  assert.equal(stopped.reason, 'revoked');
  assert.deepEqual(pairs.at(-1), null, 'onTokens heard that the session ended');
});

test('after a rewind the client resumes with its epoch, moves its position back and takes the seqs again', async () => {
  const c = open({ token: 't' }, 'http://127.0.0.1:9', { WebSocket: FakeSocket, ...fast, positions: { 1: 10 } });
  await until(() => c.state === 'open', 'the socket to open');
  let ws = FakeSocket.last;
  assert.deepEqual(ws.sent[0], { type: 'resume', positions: { 1: 10 } }, 'no epoch known yet');
  ws.answer({ type: 'hello', epoch: 'e1' });
  assert.equal(c.epoch, 'e1');
  // The server is restored from a backup: the socket closes with 4005 and comes back.
  ws.onclose({ code: 4005, reason: 'history rewound' });
  await until(() => c.state === 'open' && FakeSocket.last !== ws, 'the reconnect');
  ws = FakeSocket.last;
  assert.deepEqual(ws.sent[0], { type: 'resume', positions: { 1: 10 }, epoch: 'e1' }, 'the resume names its epoch');
  const epochs = [];
  const rewinds = [];
  c.on('epoch', (e) => epochs.push(e));
  c.on('rewound', (r) => rewinds.push(r));
  const seen = record(c);
  ws.answer({ type: 'hello', epoch: 'e2' });
  ws.answer({ type: 'rewound', chat_id: 1, seq: 5, epoch: 'e2' });
  ws.answer({ type: 'synced', chat_id: 1, last_seq: 5, more: false });
  ws.answer({ type: 'message', message: { chat_id: 1, seq: 6, body: 'new six' } });
  assert.deepEqual(epochs, [{ epoch: 'e2', previous: 'e1' }]);
  assert.deepEqual(rewinds, [{ type: 'rewound', chat_id: 1, seq: 5, epoch: 'e2' }]);
  assert.deepEqual(seen.map((m) => m.body), ['new six'], 'seq 6 again, not dropped as old');
  assert.equal(c.positions.get(1), 6);
});

test('edits, deletes and reactions come as entries that applyEntry folds into what history shows', async () => {
  const [a, b, chat] = await friends();
  const bob = open(b);
  bob.track(chat, 0);
  const seen = record(bob);
  await once(bob, 'state', (s) => s.state === 'open');
  const { message: first } = await a.sendMessage(chat, 'helo');
  const { message: second } = await a.sendMessage(chat, 'oops', undefined, { replyTo: first.seq });
  assert.equal(second.reply_to, first.seq);
  const answer = await bob.send(chat, 'hi', { replyTo: first.seq });
  assert.equal(answer.reply_to, first.seq);
  await a.editMessage(chat, first.seq, 'hello');
  await a.deleteMessage(chat, second.seq);
  await b.react(chat, first.seq, '👍🏽');
  await a.react(chat, first.seq, '👍🏽');
  await a.react(chat, first.seq, '🎉');
  await a.unreact(chat, first.seq, '🎉');
  await until(() => seen.length === 9, 'bob to receive every message and entry');

  // What bob holds after applying the entries in order is what history says.
  const held = new Map();
  for (const m of seen) {
    if (isMessage(m)) held.set(m.seq, m);
    else held.set(m.target, applyEntry(held.get(m.target), m, b.user.id));
  }
  const { messages } = await b.history(chat);
  const shown = messages.filter(isMessage);
  assert.deepEqual(shown.map((m) => m.seq), [...held.keys()]);
  for (const m of shown) {
    const mine = held.get(m.seq);
    assert.equal(mine.body, m.body);
    assert.equal(Boolean(mine.deleted), Boolean(m.deleted));
    assert.deepEqual(mine.reactions ?? [], m.reactions ?? []);
  }
  assert.equal(shown[0].body, 'hello');
  assert.deepEqual(shown[0].reactions, [{ emoji: '👍🏽', count: 2, me: true }]);
  assert.equal(shown[1].deleted, true);
  const { chat: view } = await b.chat(chat);
  assert.equal(view.last_message.body, 'hi');
});

test('a friend is online while a socket is open, hidden on request, and found by search', async () => {
  const [a, b] = await friends();
  const bob = open(b);
  await once(bob, 'state', (s) => s.state === 'open');
  const onlineAtBob = once(bob, 'presence', (p) => p.user_id === a.user.id && p.online);
  const alice = open(a);
  await onlineAtBob;
  let { friends: list } = await b.friends();
  assert.equal(list[0].online, true);
  const hidden = once(bob, 'presence', (p) => p.user_id === a.user.id && !p.online);
  await a.showPresence(false);
  assert.equal((await hidden).last_seen_at, null);
  ({ friends: list } = await b.friends());
  assert.deepEqual([list[0].online, list[0].last_seen_at], [false, null]);
  await a.showPresence(true);
  alice.close();

  const { chat } = await a.createGroup('search', [b.user.id]);
  await a.sendMessage(chat.id, 'the blue whale sings');
  const { results } = await b.search('whale');
  assert.equal(results[0].message.body, 'the blue whale sings');
  assert.deepEqual(results[0].highlight.filter((p) => p.match).map((p) => p.text), ['whale']);
});

test('a picture is uploaded, sent with a socket message and read back by the other member', async () => {
  const [a, b, chat] = await friends();
  const bob = open(b);
  bob.track(chat, 0);
  const seen = record(bob);
  const alice = open(a);
  await Promise.all([alice, bob].map((c) => once(c, 'state', (s) => s.state === 'open')));
  const bytes = new Uint8Array(3000).map((_, i) => i % 256);
  const { attachment } = await a.uploadAttachment(chat, new Blob([bytes], { type: 'image/png' }), { filename: 'dot.png' });
  assert.equal(attachment.size, 3000);
  const sent = await alice.send(chat, '', { attachments: [attachment.id] });
  assert.deepEqual(sent.attachments, [attachment.id]);
  await until(() => seen.length === 1, 'bob to receive the message');
  const blob = await b.attachment(seen[0].attachments[0]);
  assert.equal(blob.type, 'image/png');
  assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), bytes);
});
