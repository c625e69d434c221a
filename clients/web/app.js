// The web chat: plain DOM on the client library (served from /js/). Text from users is only
// ever set as textContent, never parsed as HTML.
import { Api, ApiError, Client, uuid } from './js/index.js';

const $ = (id) => document.getElementById(id);
const TOKENS_KEY = 'xfchat.session';
const PAGE = 50;

/** Creates an element with attributes (`text` sets its text) and children. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (value !== false && value != null) el.setAttribute(key, value === true ? '' : value);
  }
  el.append(...children);
  return el;
}

// The session's tokens live in localStorage, so a reload keeps it; the Api refreshes them and
// tells us of each new pair, or of the session's end.
const api = new Api('', {
  onTokens: (tokens) => {
    if (tokens) localStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
    else localStorage.removeItem(TOKENS_KEY);
  },
});
const s = {
  me: null,
  client: null,
  /** @type {Map<number, any>} chats by id, as the API shows them to me */
  chats: new Map(),
  friends: [],
  open: null, // the open chat's id
  /** @type {Map<number, Map<number, any>>} loaded messages per chat, by seq */
  loaded: new Map(),
  oldest: new Map(), // per chat: the lowest seq loaded (1: all of it)
  pending: new Map(), // client_msg_id -> <li> of a send not yet acked
  typing: new Map(), // chat id -> Map(user id -> timer)
  lastTyping: 0,
};

// ---- sign in ------------------------------------------------------------------------------

$('auth-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const action = event.submitter?.value ?? 'login';
  $('auth-error').textContent = '';
  try {
    const answer = action === 'signup'
      ? await api.signup(form.get('username'), form.get('password'))
      : await api.login(form.get('username'), form.get('password'));
    await start(answer.user);
  } catch (err) {
    $('auth-error').textContent = err.message;
  }
});

$('logout').addEventListener('click', async () => {
  await api.logout().catch(() => {});
  signOut('');
});

function signOut(why) {
  s.client?.close();
  s.client = null;
  localStorage.removeItem(TOKENS_KEY);
  api.token = null;
  api.refreshToken = null;
  $('app-view').hidden = true;
  $('logout').hidden = true;
  $('me').textContent = '';
  $('auth-view').hidden = false;
  $('auth-error').textContent = why;
  setConn('closed', 'signed out');
}

async function boot() {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(TOKENS_KEY) ?? 'null');
  } catch {
    saved = null;
  }
  if (!saved?.token) return signOut('');
  Object.assign(api, { token: saved.token, refreshToken: saved.refreshToken, expiresAt: saved.expiresAt });
  try {
    const { user } = await api.me();
    await start(user);
  } catch (err) {
    signOut(err instanceof ApiError && err.status === 401 ? 'Your session ended; log in again.' : err.message);
  }
}

async function start(user) {
  s.me = user;
  $('auth-view').hidden = true;
  $('app-view').hidden = false;
  $('logout').hidden = false;
  $('me').textContent = user.display_name;
  const [{ chats }] = await Promise.all([api.chats(), refreshFriends()]);
  s.chats = new Map(chats.map((c) => [c.id, c]));
  renderChats();
  // The socket follows every chat from where the loaded views end; history comes over HTTP.
  const positions = Object.fromEntries(chats.map((c) => [c.id, c.last_seq]));
  s.client = new Client({ api, positions });
  s.client.on('state', ({ state, reason }) => onState(state, reason));
  s.client.on('message', onMessage);
  s.client.on('chat', upsertChat);
  s.client.on('members', onMembers);
  s.client.on('rewound', onRewound);
  s.client.on('chat_removed', ({ chat_id }) => removeChat(chat_id));
  s.client.on('read', onRead);
  s.client.on('typing', onTyping);
  s.client.on('friend_request', () => refreshFriends());
  s.client.connect();
  route();
}

// ---- connection state ---------------------------------------------------------------------

const STATE_TEXT = {
  idle: 'not connected', connecting: 'connecting…', open: 'online',
  waiting: 'reconnecting…', offline: 'offline', closed: 'disconnected',
};

function setConn(state, text = STATE_TEXT[state]) {
  $('conn').dataset.state = state;
  $('conn').textContent = text;
}

function onState(state, reason) {
  setConn(state);
  if (state === 'closed' && (reason === 'revoked' || reason === 'unauthorized' || reason === 'expired')) {
    signOut('Your session ended; log in again.');
  }
}

// ---- friends and groups -------------------------------------------------------------------

async function refreshFriends() {
  const [{ friends }, { incoming, outgoing }] = await Promise.all([api.friends(), api.friendRequests()]);
  s.friends = friends;
  $('requests').replaceChildren(
    ...incoming.map((r) => h('li', {},
      h('span', { text: `${r.from_username} wants to be friends` }),
      h('button', { type: 'button', text: 'Accept', 'aria-label': `Accept ${r.from_username}`, onclick: () => answer(r.id, 'accept') }),
      h('button', { type: 'button', text: 'Decline', 'aria-label': `Decline ${r.from_username}`, onclick: () => answer(r.id, 'decline') }))),
    ...outgoing.map((r) => h('li', {},
      h('span', { text: `Asked ${r.to_username}` }),
      h('button', { type: 'button', text: 'Cancel', 'aria-label': `Cancel request to ${r.to_username}`, onclick: () => answer(r.id, 'cancel') }))),
  );
  $('friend-list').replaceChildren(...friends.map((f) => h('li', {},
    h('span', { text: f.display_name }),
    h('button', { type: 'button', text: 'Message', 'aria-label': `Message ${f.display_name}`, onclick: () => openDirect(f.id) }))));
  $('group-members').replaceChildren(h('legend', { text: 'Members' }), ...friends.map((f) => h('label', {},
    h('input', { type: 'checkbox', value: f.id }), ` ${f.display_name}`)));
}

async function answer(id, action) {
  await api.answerRequest(id, action).catch((e) => ($('friend-error').textContent = e.message));
  await refreshFriends();
}

$('friend-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('friend-error').textContent = '';
  try {
    await api.requestFriend($('friend-name').value.trim());
    $('friend-name').value = '';
    await refreshFriends();
  } catch (err) {
    $('friend-error').textContent = err.message;
  }
});

$('group-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const ids = [...$('group-members').querySelectorAll('input:checked')].map((i) => Number(i.value));
  try {
    const { chat } = await api.createGroup($('group-title').value, ids);
    $('group-title').value = '';
    upsertChat(chat);
    location.hash = `#/chat/${chat.id}`;
  } catch (err) {
    $('friend-error').textContent = err.message;
  }
});

async function openDirect(userId) {
  const { chat } = await api.directChat(userId);
  upsertChat(chat);
  location.hash = `#/chat/${chat.id}`;
}

// ---- the chat list ------------------------------------------------------------------------

function chatName(chat) {
  if (chat.kind === 'group') return chat.title;
  const other = chat.members.find((m) => m.id !== s.me.id);
  return other?.display_name ?? 'direct chat';
}

function upsertChat(chat) {
  const known = s.chats.get(chat.id);
  // A `chat` event carries the receiver's view of its members; keep the counters already known.
  s.chats.set(chat.id, known ? { ...known, members: chat.members, title: chat.title } : chat);
  if (!s.client?.positions.has(chat.id)) s.client?.track(chat.id, chat.last_seq);
  renderChats();
}

/** Who joined and who left a chat we are in: only the change comes, not the whole list. */
function onMembers({ chat_id, added, removed }) {
  const chat = s.chats.get(chat_id);
  if (!chat) return;
  const gone = new Set(removed);
  const members = chat.members.filter((m) => !gone.has(m.id) && !added.some((a) => a.id === m.id));
  s.chats.set(chat_id, { ...chat, members: [...members, ...added] });
  renderChats();
}

/** The chat's history was set back (a restore, a failover): reload it if it is open. */
function onRewound({ chat_id, seq }) {
  const chat = s.chats.get(chat_id);
  if (!chat) return;
  chat.last_seq = Math.min(chat.last_seq, seq);
  chat.unread = Math.max(0, chat.last_seq - chat.last_read_seq);
  if (s.open === chat_id) route();
  else renderChats();
}

function removeChat(id) {
  s.chats.delete(id);
  s.client?.untrack(id);
  renderChats();
  if (s.open === id) showNote('You are no longer in this chat.');
}

function renderChats() {
  const chats = [...s.chats.values()].sort((a, b) => (b.active ?? 0) - (a.active ?? 0) || b.id - a.id);
  $('chat-list').replaceChildren(...chats.map((c) => {
    const unread = c.unread > 0 ? h('span', { class: 'badge', 'aria-label': `${c.unread} unread`, text: String(c.unread) }) : '';
    return h('li', {}, h('a', {
      class: 'chat-item', href: `#/chat/${c.id}`, 'aria-current': s.open === c.id ? 'true' : false,
    }, h('span', { text: chatName(c) }), unread));
  }));
}

// ---- one chat -----------------------------------------------------------------------------

window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', markRead);
const visible = () => document.visibilityState === 'visible';

function showNote(text) {
  s.open = null;
  $('chat-open').hidden = true;
  $('chat-note').hidden = false;
  $('chat-note').textContent = text;
  renderChats();
}

async function route() {
  const id = Number(/^#\/chat\/(\d+)$/.exec(location.hash)?.[1]);
  if (!id) return showNote('Pick a chat, or start one with a friend.');
  let chat;
  try {
    chat = (await api.chat(id)).chat;
  } catch (err) {
    return showNote(err.status === 404 ? 'This chat does not exist, or you are not a member of it.' : err.message);
  }
  upsertChat(chat);
  s.open = id;
  $('chat-note').hidden = true;
  $('chat-open').hidden = false;
  $('chat-title').textContent = chatName(chat);
  $('typing').textContent = '';
  $('messages').replaceChildren();
  s.loaded.set(id, new Map());
  s.oldest.set(id, chat.last_seq + 1);
  await loadOlder(id);
  for (const li of s.pending.values()) if (Number(li.dataset.chat) === id) $('messages').append(li);
  $('scroller').scrollTop = $('scroller').scrollHeight;
  renderChats();
  markRead();
}

/** Loads the page before the oldest loaded message, keeping the view where it was. */
async function loadOlder(id) {
  const before = s.oldest.get(id);
  if (before <= 1 || s.loadingOlder) return;
  s.loadingOlder = true;
  try {
    const { messages } = await api.history(id, { beforeSeq: before, limit: PAGE });
    if (s.open !== id) return;
    const scroller = $('scroller');
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    for (const m of messages) place(m);
    s.oldest.set(id, messages.length < PAGE ? 1 : messages[0].seq);
    $('history-note').textContent = s.oldest.get(id) <= 1 ? 'The start of this chat.' : '';
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  } finally {
    s.loadingOlder = false;
  }
}

$('scroller').addEventListener('scroll', () => {
  if (s.open && $('scroller').scrollTop < 60) loadOlder(s.open);
});

/** Puts a stored message into the open chat's list, in seq order, once. */
function place(m) {
  const loaded = s.loaded.get(m.chat_id);
  if (!loaded || loaded.has(m.seq)) return;
  loaded.set(m.seq, m);
  const li = messageItem(m);
  const later = [...$('messages').children].find((el) => el.dataset.seq && Number(el.dataset.seq) > m.seq);
  $('messages').insertBefore(li, later ?? firstPending());
}

function firstPending() {
  return $('messages').querySelector('li.pending') ?? null;
}

function messageItem(m) {
  const chat = s.chats.get(m.chat_id);
  const own = m.sender_id === s.me.id;
  const sender = chat?.members.find((u) => u.id === m.sender_id);
  return h('li', { class: own ? 'msg own' : 'msg', 'data-seq': m.seq },
    h('div', { class: 'who', text: own ? 'You' : sender?.display_name ?? 'someone' }),
    h('div', { class: 'body', text: m.body }),
    h('div', { class: 'meta', text: `${new Date(m.created_at).toLocaleTimeString()}${own ? ` · ${readState(chat, m.seq)}` : ''}` }));
}

/** "read" once every other member's marker passed the message, "sent" before. */
function readState(chat, seq) {
  const others = chat?.members.filter((u) => u.id !== s.me.id) ?? [];
  return others.length && others.every((u) => u.last_read_seq >= seq) ? 'read' : 'sent';
}

function onMessage(m) {
  const chat = s.chats.get(m.chat_id);
  if (!chat) return;
  chat.last_seq = Math.max(chat.last_seq, m.seq);
  chat.active = Date.now();
  const li = s.pending.get(m.client_msg_id);
  if (li) {
    li.remove();
    s.pending.delete(m.client_msg_id);
  }
  if (m.sender_id !== s.me.id) {
    clearTyping(m.chat_id, m.sender_id);
    if (s.open !== m.chat_id || !visible()) chat.unread += 1;
    // Sending reads the chat up to the message sent (the server moves that marker too).
    const sender = chat.members.find((u) => u.id === m.sender_id);
    if (sender) sender.last_read_seq = Math.max(sender.last_read_seq, m.seq);
  } else {
    chat.last_read_seq = Math.max(chat.last_read_seq, m.seq);
  }
  if (s.open === m.chat_id) {
    const scroller = $('scroller');
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
    place(m);
    if (m.sender_id !== s.me.id) refreshReadStates(m.chat_id);
    if (atBottom || m.sender_id === s.me.id) scroller.scrollTop = scroller.scrollHeight;
    markRead();
  }
  renderChats();
}

function markRead() {
  const chat = s.chats.get(s.open);
  if (!chat || !visible()) return;
  if (chat.last_seq <= chat.last_read_seq) {
    chat.unread = 0;
    return;
  }
  chat.last_read_seq = chat.last_seq;
  chat.unread = 0;
  s.client?.read(chat.id, chat.last_seq);
  renderChats();
}

function onRead({ chat_id, user_id, seq }) {
  const chat = s.chats.get(chat_id);
  const member = chat?.members.find((u) => u.id === user_id);
  if (!member) return;
  member.last_read_seq = Math.max(member.last_read_seq, seq);
  if (user_id === s.me.id) {
    chat.last_read_seq = Math.max(chat.last_read_seq, seq);
    chat.unread = Math.max(0, chat.last_seq - chat.last_read_seq);
    renderChats();
  }
  refreshReadStates(chat_id);
}

/** Redraws the open chat's own messages, whose "sent"/"read" depends on the others' markers. */
function refreshReadStates(chatId) {
  if (s.open !== chatId) return;
  for (const li of $('messages').querySelectorAll('li.own[data-seq]')) {
    const m = s.loaded.get(chatId)?.get(Number(li.dataset.seq));
    if (m) li.replaceWith(messageItem(m));
  }
}

// ---- typing -------------------------------------------------------------------------------

function onTyping({ chat_id, user_id }) {
  if (user_id === s.me.id) return;
  const users = s.typing.get(chat_id) ?? new Map();
  s.typing.set(chat_id, users);
  clearTimeout(users.get(user_id));
  users.set(user_id, setTimeout(() => clearTyping(chat_id, user_id), 4000));
  renderTyping();
}

function clearTyping(chatId, userId) {
  const users = s.typing.get(chatId);
  if (!users?.has(userId)) return;
  clearTimeout(users.get(userId));
  users.delete(userId);
  renderTyping();
}

function renderTyping() {
  const chat = s.chats.get(s.open);
  const users = [...(s.typing.get(s.open)?.keys() ?? [])];
  const names = users.map((id) => chat?.members.find((u) => u.id === id)?.display_name ?? 'someone');
  $('typing').textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
}

// ---- sending ------------------------------------------------------------------------------

$('body').addEventListener('input', () => {
  if (s.open && Date.now() - s.lastTyping > 2500 && s.client?.state === 'open') {
    s.lastTyping = Date.now();
    s.client.typing(s.open);
  }
});

$('body').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
});

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const body = $('body').value;
  if (!s.open || !body.trim()) return;
  $('body').value = '';
  s.lastTyping = 0; // the next keystroke is news again
  const id = uuid();
  const li = h('li', { class: 'msg own pending', 'data-chat': s.open },
    h('div', { class: 'who', text: 'You' }),
    h('div', { class: 'body', text: body }),
    h('div', { class: 'meta', text: 'sending…' }));
  s.pending.set(id, li);
  $('messages').append(li);
  $('scroller').scrollTop = $('scroller').scrollHeight;
  // The outbox keeps it through reconnects; only a refusal for good ends here.
  s.client.send(s.open, body, { clientMsgId: id }).catch((err) => {
    li.classList.add('failed');
    li.querySelector('.meta').textContent = `not sent: ${err.message}`;
    s.pending.delete(id);
  });
});

boot();
