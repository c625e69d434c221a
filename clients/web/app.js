// The web chat: plain DOM on the client library (served from /js/). Text from users is only
// ever set as textContent, never parsed as HTML.
import { Api, ApiError, applyEntry, Client, isMessage, uuid } from './js/index.js';

const $ = (id) => document.getElementById(id);
const TOKENS_KEY = 'xfchat.session';
const PAGE = 50;
/** The server's default XFCHAT_MESSAGE_MAX_BYTES: a longer message is refused, not cut. */
const MAX_BYTES = 8192;
const QUICK_REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const encoder = new TextEncoder();

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
  replyTo: null, // the message the composer answers
  editing: null, // the message the composer edits
  files: [], // uploads for the next message: {name, id?, failed?}
  blobs: new Map(), // attachment id -> Promise of {url, type, size}
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
  s.client.on('presence', onPresence);
  api.me().then(({ show_presence: show }) => ($('show-presence').checked = show)).catch(() => {});
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
  renderFriends();
  $('group-members').replaceChildren(h('legend', { text: 'Members' }), ...friends.map((f) => h('label', {},
    h('input', { type: 'checkbox', value: f.id }), ` ${f.display_name}`)));
}

/** "online", "last seen 14:02", or nothing (hidden, or never). */
function presenceText(f) {
  if (f.online) return 'online';
  return f.last_seen_at ? `last seen ${shortTime(f.last_seen_at)}` : '';
}

function dot(f) {
  return h('span', { class: f.online ? 'dot on' : 'dot', 'aria-hidden': 'true' });
}

function renderFriends() {
  $('friend-list').replaceChildren(...s.friends.map((f) => h('li', { 'data-user': f.id },
    dot(f),
    h('span', { class: 'friend' }, h('span', { text: f.display_name }),
      h('small', { class: 'presence', text: presenceText(f) })),
    h('button', { type: 'button', text: 'Message', 'aria-label': `Message ${f.display_name}`, onclick: () => openDirect(f.id) }))));
  $('friends-empty').hidden = s.friends.length > 0;
  renderDetails();
}

/** A friend came online, went offline, or hid it. */
function onPresence({ user_id, online, last_seen_at }) {
  const f = s.friends.find((x) => x.id === user_id);
  if (!f) return;
  Object.assign(f, { online, last_seen_at });
  renderFriends();
  renderChats();
  renderPresence();
}

/** The open direct chat's other person: online, or when last seen. */
function renderPresence() {
  const chat = s.chats.get(s.open);
  const other = chat?.kind === 'direct' ? chat.members.find((m) => m.id !== s.me.id) : null;
  const f = other && s.friends.find((x) => x.id === other.id);
  $('chat-presence').textContent = f ? presenceText(f) : '';
}

$('show-presence').addEventListener('change', (event) => {
  api.showPresence(event.target.checked).catch((err) => ($('friend-error').textContent = err.message));
});

// ---- search -------------------------------------------------------------------------------

$('search-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const q = $('search-q').value.trim();
  if (!q) return clearSearch();
  try {
    const { results } = await api.search(q);
    $('search-results').replaceChildren(...results.map((r) => {
      const chat = s.chats.get(r.message.chat_id);
      return h('li', {}, h('a', { class: 'hit', href: `#/chat/${r.message.chat_id}` },
        h('span', { class: 'chat-line' },
          h('span', { class: 'chat-name', text: chat ? chatName(chat) : 'a chat' }),
          h('time', { class: 'chat-time', text: shortTime(r.message.created_at) })),
        h('span', { class: 'snippet', dir: 'auto' },
          ...r.highlight.map((p) => (p.match ? h('mark', { text: p.text }) : p.text)))));
    }));
    $('search-note').textContent = results.length ? '' : `Nothing found for “${q}”.`;
    $('search-clear').hidden = false;
  } catch (err) {
    $('search-note').textContent = err.message;
  }
});

function clearSearch() {
  $('search-q').value = '';
  $('search-results').replaceChildren();
  $('search-note').textContent = '';
  $('search-clear').hidden = true;
}

$('search-clear').addEventListener('click', clearSearch);

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
  if (s.open === chat.id) renderComposer();
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
  if (s.open === chat_id) renderDetails();
}

/** The chat's history was set back (a restore, a failover): reload it if it is open. */
function onRewound({ chat_id, seq }) {
  const chat = s.chats.get(chat_id);
  if (!chat) return;
  chat.last_seq = Math.min(chat.last_seq, seq);
  chat.unread = Math.min(chat.unread, Math.max(0, chat.last_seq - chat.last_read_seq));
  if (s.open === chat_id) route();
  else renderChats();
}

// ---- chat details: members, leaving, unfriending, blocking --------------------------------

$('details-toggle').addEventListener('click', () => {
  $('details').hidden = !$('details').hidden;
  $('details-toggle').setAttribute('aria-expanded', String(!$('details').hidden));
  renderDetails();
});

function renderDetails() {
  const chat = s.chats.get(s.open);
  if (!chat || $('details').hidden) return;
  const group = chat.kind === 'group';
  const mine = group && chat.created_by === s.me.id;
  $('member-list').replaceChildren(...chat.members.map((m) => h('li', {},
    h('span', { text: m.id === s.me.id ? `${m.display_name} (you)` : m.display_name }),
    mine && m.id !== s.me.id
      ? h('button', { type: 'button', text: 'Remove', 'aria-label': `Remove ${m.display_name}`, onclick: () => detail(api.removeMember(chat.id, m.id)) })
      : '')));
  const addable = s.friends.filter((f) => !chat.members.some((m) => m.id === f.id));
  $('add-form').hidden = !mine || addable.length === 0;
  $('add-who').replaceChildren(...addable.map((f) => h('option', { value: f.id, text: f.display_name })));
  $('leave').hidden = !group;
  const other = group ? null : chat.members.find((m) => m.id !== s.me.id);
  $('unfriend').hidden = !other || !s.friends.some((f) => f.id === other.id);
  $('block').hidden = !other;
}

/** Runs a change from the details panel; the server's events update the view. */
function detail(request, then) {
  $('details-error').textContent = '';
  request.then(then).catch((err) => ($('details-error').textContent = err.message));
}

$('add-form').addEventListener('submit', (event) => {
  event.preventDefault();
  detail(api.addMembers(s.open, [Number($('add-who').value)]));
});

$('leave').addEventListener('click', () => {
  if (window.confirm('Leave this group?')) detail(api.leave(s.open));
});

function otherInOpenChat() {
  return s.chats.get(s.open)?.members.find((m) => m.id !== s.me.id);
}

$('unfriend').addEventListener('click', () => {
  const other = otherInOpenChat();
  if (other && window.confirm(`Unfriend ${other.display_name}? You keep the chat's history.`)) {
    detail(api.removeFriend(other.id), refreshFriends);
  }
});

$('block').addEventListener('click', () => {
  const other = otherInOpenChat();
  if (other && window.confirm(`Block ${other.display_name}? They can no longer message you or befriend you.`)) {
    detail(api.block(other.id), refreshFriends);
  }
});

function removeChat(id) {
  s.chats.delete(id);
  s.client?.untrack(id);
  renderChats();
  if (s.open === id) showNote('You are no longer in this chat.');
}

const activity = (c) => Date.parse(c.last_activity_at ?? c.created_at) || 0;

/** A direct chat's presence dot for the other person, when they are a friend. */
function directDot(c) {
  if (c.kind !== 'direct') return [];
  const other = c.members.find((m) => m.id !== s.me.id);
  const f = other && s.friends.find((x) => x.id === other.id);
  return f ? [dot(f), ' '] : [];
}

/** A chat's preview line: its newest message as it is now. */
function preview(c) {
  const m = c.last_message;
  if (!m) return 'No messages yet';
  const who = m.sender_id === s.me.id ? 'You: ' : '';
  if (m.deleted) return `${who}deleted message`;
  const text = m.body.split('\n')[0].slice(0, 80);
  return `${who}${text || (m.attachments?.length ? 'attachment' : '')}`;
}

/** "14:02" today, "Mon 3" otherwise. */
function shortTime(at) {
  const d = new Date(at);
  return d.toDateString() === new Date().toDateString()
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

function renderChats() {
  const chats = [...s.chats.values()].sort((a, b) => activity(b) - activity(a) || b.id - a.id);
  $('chat-list').replaceChildren(...chats.map((c) => {
    const unread = c.unread > 0 ? h('span', { class: 'badge', 'aria-label': `${c.unread} unread`, text: String(c.unread) }) : '';
    return h('li', {}, h('a', {
      class: 'chat-item', href: `#/chat/${c.id}`, 'aria-current': s.open === c.id ? 'true' : false,
    }, h('span', { class: 'chat-line' },
      h('span', { class: 'chat-name' }, ...directDot(c), chatName(c)),
      h('time', { class: 'chat-time', datetime: c.last_activity_at ?? c.created_at, text: c.last_message ? shortTime(c.last_message.created_at) : '' })),
    h('span', { class: 'chat-line' },
      h('span', { class: 'chat-preview', dir: 'auto', text: preview(c) }), unread)));
  }));
  $('chats-empty').hidden = chats.length > 0;
  const total = chats.reduce((n, c) => n + (c.unread > 0 ? c.unread : 0), 0);
  document.title = total > 0 ? `(${total}) XFChat` : 'XFChat';
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

/** The chat the address names, or 0. */
const hashChat = () => Number(/^#\/chat\/(\d+)$/.exec(location.hash)?.[1] ?? 0);

async function route() {
  const id = hashChat();
  if (!id) {
    document.body.dataset.view = 'list';
    return showNote('Pick a chat, or start one with a friend.');
  }
  // Until the chat is loaded, nothing typed goes to the one being left.
  if (s.open !== id) s.open = null;
  let chat;
  try {
    chat = (await api.chat(id)).chat;
  } catch (err) {
    if (hashChat() !== id) return;
    return showNote(err.status === 404 ? 'This chat does not exist, or you are not a member of it.' : err.message);
  }
  if (hashChat() !== id) return; // another chat was picked meanwhile
  upsertChat(chat);
  s.open = id;
  $('chat-note').hidden = true;
  $('chat-open').hidden = false;
  $('chat-title').textContent = chatName(chat);
  renderPresence();
  renderDetails();
  document.body.dataset.view = 'chat';
  $('typing').textContent = '';
  s.replyTo = null;
  s.editing = null;
  s.files = [];
  renderFiles();
  renderComposer();
  $('messages').replaceChildren();
  s.loaded.set(id, new Map());
  s.oldest.set(id, chat.last_seq + 1);
  await loadOlder(id);
  for (const li of s.pending.values()) if (Number(li.dataset.chat) === id) $('messages').append(li);
  renderHistoryNote(id);
  $('scroller').scrollTop = $('scroller').scrollHeight;
  renderChats();
  markRead();
}

/** Says whether the chat's start is loaded, or that it has nothing yet. */
function renderHistoryNote(id) {
  const start = s.oldest.get(id) <= 1;
  const empty = start && !s.loaded.get(id)?.size && !$('messages').children.length;
  $('history-note').textContent = empty ? 'No messages yet. Say hello!' : start ? 'The start of this chat.' : '';
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
    renderHistoryNote(id);
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  } finally {
    s.loadingOlder = false;
  }
}

$('scroller').addEventListener('scroll', () => {
  if (s.open && $('scroller').scrollTop < 60) loadOlder(s.open);
});

/** Puts a stored message into the open chat's list, in seq order, once; entries (edits,
 * reactions) are already in the state of the messages history shows, so they are skipped. */
function place(m) {
  const loaded = s.loaded.get(m.chat_id);
  if (!loaded || loaded.has(m.seq) || !isMessage(m)) return;
  loaded.set(m.seq, m);
  const li = messageItem(m);
  const later = [...$('messages').children].find((el) => el.dataset.seq && Number(el.dataset.seq) > m.seq);
  $('messages').insertBefore(li, later ?? firstPending());
  if (s.open === m.chat_id) renderHistoryNote(m.chat_id);
}

function firstPending() {
  return $('messages').querySelector('li.pending') ?? null;
}

/** Who a message is from: you, a member, or (sender 0) the app's service. */
const nameOf = (chat, id) => (id === s.me.id ? 'You' : id === 0 ? 'System'
  : chat?.members.find((u) => u.id === id)?.display_name ?? 'someone');

function messageItem(m) {
  const chat = s.chats.get(m.chat_id);
  const own = m.sender_id === s.me.id;
  const parts = [h('div', { class: 'who', text: nameOf(chat, m.sender_id) })];
  if (m.reply_to) {
    const q = s.loaded.get(m.chat_id)?.get(m.reply_to);
    const text = !q ? 'an earlier message' : q.deleted ? 'deleted message' : q.body.slice(0, 100);
    parts.push(h('button', {
      type: 'button', class: 'quote', dir: 'auto', 'aria-label': `Replying to: ${text}`,
      onclick: () => $('messages').querySelector(`li[data-seq="${m.reply_to}"]`)?.scrollIntoView({ block: 'center' }),
    }, h('span', { class: 'who', text: q ? nameOf(chat, q.sender_id) : '' }), ` ${text}`));
  }
  parts.push(m.deleted
    ? h('div', { class: 'body deleted', text: 'This message was deleted' })
    : h('div', { class: 'body', dir: 'auto', text: m.body }));
  if (m.attachments?.length && !m.deleted) parts.push(h('div', { class: 'atts' }, ...m.attachments.map(attachmentView)));
  if (m.reactions?.length) {
    parts.push(h('div', { class: 'reactions' }, ...m.reactions.map((r) => h('button', {
      type: 'button', class: 'reaction', 'aria-pressed': r.me ? 'true' : 'false',
      'aria-label': `${r.emoji} ${r.count}${r.me ? ', yours' : ''}`, text: `${r.emoji} ${r.count}`,
      onclick: () => act(r.me ? api.unreact(m.chat_id, m.seq, r.emoji) : api.react(m.chat_id, m.seq, r.emoji)),
    }))));
  }
  const edited = m.edited_at && !m.deleted ? ' · edited' : '';
  parts.push(h('div', { class: 'meta', text: `${new Date(m.created_at).toLocaleTimeString()}${edited}${own ? ` · ${readState(chat, m.seq)}` : ''}` }));
  if (!m.deleted) parts.push(actions(chat, m, own));
  return h('li', { class: own ? 'msg own' : 'msg', 'data-seq': m.seq }, ...parts);
}

/** A message's buttons: reply, react, and for its sender (or a group's creator) edit, delete. */
function actions(chat, m, own) {
  const picker = h('div', { class: 'picker', hidden: true, role: 'group', 'aria-label': 'Pick a reaction' },
    ...QUICK_REACTIONS.map((emoji) => h('button', {
      type: 'button', text: emoji, 'aria-label': `React ${emoji}`,
      onclick: () => { picker.hidden = true; act(api.react(m.chat_id, m.seq, emoji)); },
    })));
  const moderates = chat?.kind === 'group' && chat.created_by === s.me.id;
  return h('div', { class: 'actions' },
    h('button', { type: 'button', text: 'Reply', onclick: () => startReply(m) }),
    h('button', { type: 'button', text: 'React', 'aria-expanded': 'false', onclick: (e) => {
      picker.hidden = !picker.hidden;
      e.currentTarget.setAttribute('aria-expanded', String(!picker.hidden));
    } }),
    own ? h('button', { type: 'button', text: 'Edit', onclick: () => startEdit(m) }) : '',
    own || moderates ? h('button', { type: 'button', text: 'Delete', onclick: () => {
      if (window.confirm('Delete this message for everyone?')) act(api.deleteMessage(m.chat_id, m.seq));
    } }) : '',
    picker);
}

/** An attachment in a message: images shown, anything else a download link. */
function attachmentView(id) {
  const box = h('figure', { class: 'att', text: 'loading attachment…' });
  if (!s.blobs.has(id)) {
    s.blobs.set(id, api.attachment(id).then((blob) => ({ url: URL.createObjectURL(blob), type: blob.type, size: blob.size })));
  }
  s.blobs.get(id).then(({ url, type, size }) => {
    box.replaceChildren(type.startsWith('image/') && type !== 'image/svg+xml'
      ? h('img', { src: url, alt: 'attached image', loading: 'lazy' })
      : h('a', { href: url, download: `attachment-${id.slice(0, 8)}`, text: `Download file (${Math.ceil(size / 1024)} KiB)` }));
  }).catch((err) => {
    s.blobs.delete(id);
    box.textContent = `attachment unavailable: ${err.message}`;
  });
  return box;
}

// ---- attaching files ----------------------------------------------------------------------

/** Uploads `files` to the open chat for the next message. */
function attach(files) {
  const chat = s.open;
  if (!chat) return;
  for (const file of files) {
    const item = { name: file.name };
    s.files.push(item);
    api.uploadAttachment(chat, file).then(({ attachment }) => {
      item.id = attachment.id;
    }).catch((err) => {
      item.failed = err.message;
    }).finally(renderFiles);
  }
  renderFiles();
}

function renderFiles() {
  $('files').replaceChildren(...s.files.map((f) => h('li', { class: f.failed ? 'failed' : '' },
    h('span', { text: f.failed ? `${f.name}: ${f.failed}` : f.id ? f.name : `${f.name} (uploading…)` }),
    h('button', { type: 'button', class: 'secondary', text: '×', 'aria-label': `Remove ${f.name}`, onclick: () => {
      s.files = s.files.filter((x) => x !== f);
      renderFiles();
    } }))));
  renderCount();
}

$('file').addEventListener('change', (event) => {
  attach([...event.target.files]);
  event.target.value = '';
});

for (const type of ['dragenter', 'dragover']) {
  $('chat-open').addEventListener(type, (event) => {
    if (![...(event.dataTransfer?.types ?? [])].includes('Files')) return;
    event.preventDefault();
    $('chat-open').classList.add('dropping');
  });
}
$('chat-open').addEventListener('dragleave', () => $('chat-open').classList.remove('dropping'));
$('chat-open').addEventListener('drop', (event) => {
  event.preventDefault();
  $('chat-open').classList.remove('dropping');
  attach([...(event.dataTransfer?.files ?? [])]);
});

/** Runs an edit, delete or reaction; its entry comes back on the socket like a message. */
function act(request) {
  $('composer-error').textContent = '';
  request.catch((err) => ($('composer-error').textContent = err.message));
}

/** Redraws one loaded message of the open chat. */
function redraw(m) {
  if (s.open !== m.chat_id) return;
  $('messages').querySelector(`li[data-seq="${m.seq}"]`)?.replaceWith(messageItem(m));
}

/** "read" once every other member's marker passed the message, "sent" before. */
function readState(chat, seq) {
  const others = chat?.members.filter((u) => u.id !== s.me.id) ?? [];
  return others.length && others.every((u) => u.last_read_seq >= seq) ? 'read' : 'sent';
}

/** An edit, delete or reaction: applied to the message it names, never unread. */
function onEntry(chat, e) {
  const loaded = s.loaded.get(e.chat_id);
  const target = loaded?.get(e.target);
  if (target) {
    const next = applyEntry(target, e, s.me.id);
    loaded.set(e.target, next);
    redraw(next);
    if (e.kind === 'edit' || e.kind === 'delete') {
      for (const [seq, m] of loaded) if (m.reply_to === e.target) redraw(loaded.get(seq));
    }
  }
  if (chat.last_message?.seq === e.target) chat.last_message = applyEntry(chat.last_message, e, s.me.id);
  if (s.editing?.seq === e.target && e.kind === 'delete') cancelCompose();
  if (s.open === e.chat_id) markRead();
  renderChats();
}

function onMessage(m) {
  const chat = s.chats.get(m.chat_id);
  if (!chat) return;
  chat.last_seq = Math.max(chat.last_seq, m.seq);
  if (!isMessage(m)) return onEntry(chat, m);
  chat.last_message = m;
  chat.last_activity_at = m.created_at;
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
    if (chat.last_read_seq >= chat.last_seq) chat.unread = 0;
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

function renderComposer() {
  const chat = s.chats.get(s.open);
  const target = s.editing ?? s.replyTo;
  $('compose-note').hidden = !target;
  if (target) {
    $('compose-what').textContent = s.editing
      ? 'Editing your message'
      : `Replying to ${nameOf(chat, target.sender_id)}: ${target.body.slice(0, 80)}`;
  }
  $('send').textContent = s.editing ? 'Save' : 'Send';
  renderCount();
}

function startReply(m) {
  s.editing = null;
  s.replyTo = m;
  renderComposer();
  $('body').focus();
}

function startEdit(m) {
  s.replyTo = null;
  s.editing = m;
  $('body').value = m.body;
  renderComposer();
  $('body').focus();
}

function cancelCompose() {
  if (s.editing) $('body').value = '';
  s.replyTo = null;
  s.editing = null;
  renderComposer();
}

$('compose-cancel').addEventListener('click', cancelCompose);

/** The length in bytes, shown near the limit, which the server counts; over it, no sending. */
function renderCount() {
  const bytes = encoder.encode($('body').value).length;
  const over = bytes > MAX_BYTES;
  $('count').hidden = bytes < MAX_BYTES * 0.8;
  $('count').textContent = over
    ? `${bytes - MAX_BYTES} bytes too long (at most ${MAX_BYTES})`
    : `${bytes} / ${MAX_BYTES} bytes`;
  $('count').classList.toggle('over', over);
  $('send').disabled = over || s.files.some((f) => !f.id && !f.failed);
}

$('body').addEventListener('input', renderCount);

$('back').addEventListener('click', () => {
  location.hash = '#/';
});

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
  const files = s.files.filter((f) => f.id).map((f) => f.id);
  if (!s.open || (!body.trim() && !files.length) || encoder.encode(body).length > MAX_BYTES) return;
  if (s.files.some((f) => !f.id && !f.failed)) return;
  $('composer-error').textContent = '';
  if (s.editing) {
    const m = s.editing;
    if (body !== m.body) act(api.editMessage(m.chat_id, m.seq, body));
    $('body').value = '';
    cancelCompose();
    return;
  }
  const replyTo = s.replyTo?.seq;
  s.files = [];
  renderFiles();
  cancelCompose();
  $('body').value = '';
  renderCount();
  s.lastTyping = 0; // the next keystroke is news again
  const id = uuid();
  const li = h('li', { class: 'msg own pending', 'data-chat': s.open },
    h('div', { class: 'who', text: 'You' }),
    h('div', { class: 'body', dir: 'auto', text: files.length ? `${body}${body ? ' ' : ''}📎 ${files.length}` : body }),
    h('div', { class: 'meta', text: 'sending…' }));
  s.pending.set(id, li);
  $('messages').append(li);
  renderHistoryNote(s.open);
  $('scroller').scrollTop = $('scroller').scrollHeight;
  // The outbox keeps it through reconnects; only a refusal for good ends here.
  s.client.send(s.open, body, { clientMsgId: id, replyTo, attachments: files }).catch((err) => {
    li.classList.add('failed');
    li.querySelector('.meta').textContent = `not sent: ${err.message}`;
    s.pending.delete(id);
  });
});

boot();
