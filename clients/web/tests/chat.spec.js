import { expect, test } from '@playwright/test';

let n = 0;
/** A username unique to this run. */
const unique = (prefix) => `${prefix}${process.pid}${Date.now() % 1e6}${(n += 1)}`;

async function signUp(page, username) {
  await page.goto('/');
  await page.getByLabel('Username', { exact: true }).fill(username);
  await page.getByLabel('Password', { exact: true }).fill('correct horse battery');
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page.locator('#conn')).toHaveText('online');
}

async function send(page, text) {
  await page.locator('#body').fill(text);
  await page.locator('#body').press('Enter');
}

const bodies = (page) => page.locator('#messages li .body');

/** Opens a chat from the list and waits until it is the one shown. */
async function openChat(page, name, title = name) {
  await page.getByRole('link', { name }).click();
  await expect(page.locator('#chat-title')).toHaveText(title);
}

/** Two people in browsers of their own who became friends through the UI, their direct chat open. */
async function friends(browser) {
  const contexts = [await browser.newContext(), await browser.newContext()];
  const [a, b] = await Promise.all(contexts.map((c) => c.newPage()));
  const [an, bn] = [unique('alice'), unique('bob')];
  await signUp(a, an);
  await signUp(b, bn);
  await a.getByLabel("Friend's username").fill(bn);
  await a.getByRole('button', { name: 'Add friend' }).click();
  await expect(a.getByText(`Asked ${bn}`)).toBeVisible();
  await b.getByRole('button', { name: `Accept ${an}` }).click();
  await a.getByRole('button', { name: `Message ${bn}` }).click();
  await expect(a.locator('#chat-title')).toHaveText(bn);
  const chatId = Number(new URL(a.url()).hash.split('/').pop());
  return { a, b, an, bn, chatId, contexts };
}

test('two people become friends and chat live, with unread counts, typing and read markers', async ({ browser }) => {
  const { a, b, an } = await friends(browser);
  // Bob hears of the new chat live and has not opened it.
  const chatAtBob = b.getByRole('link', { name: an });
  await expect(chatAtBob).toBeVisible();
  await send(a, 'hi bob');
  await send(a, 'are you there?');
  await expect(chatAtBob.locator('.badge')).toHaveText('2');
  await expect(chatAtBob.getByLabel('2 unread')).toBeVisible();
  await chatAtBob.click();
  await expect(bodies(b)).toHaveText(['hi bob', 'are you there?']);
  await expect(chatAtBob.locator('.badge')).toHaveCount(0);
  // Alice sees her messages read once bob has them open.
  await expect(a.locator('#messages li.own .meta').last()).toContainText('read');
  await a.locator('#body').pressSequentially('yes, I am', { delay: 30 });
  await expect(b.locator('#typing')).toHaveText(`${an} is typing…`);
  await send(b, 'here!');
  await expect(bodies(a)).toHaveText(['hi bob', 'are you there?', 'here!']);
  await expect(b.locator('#typing')).toHaveText('');
  // Alice's own messages never count as unread for her.
  await expect(a.locator('#chat-list .badge')).toHaveCount(0);
});

test('offline while 20 messages come, a reader sees all 20 in order once back, with no reload and no duplicates', async ({ browser }) => {
  const { a, b, an, contexts } = await friends(browser);
  await openChat(b, an);
  await send(a, 'before');
  await expect(bodies(b)).toHaveText(['before']);
  await b.evaluate(() => {
    window.sameDocument = true;
  });

  await contexts[1].setOffline(true);
  await expect(b.locator('#conn')).toHaveText('offline');
  const twenty = Array.from({ length: 20 }, (_, i) => `while away ${i + 1}`);
  for (const text of twenty) await send(a, text);
  await expect(a.locator('#messages li.pending')).toHaveCount(0);
  // Bob writes while offline: his message waits in the outbox.
  await send(b, 'written offline');
  await expect(b.locator('#messages li.pending')).toHaveCount(1);

  await contexts[1].setOffline(false);
  await expect(b.locator('#conn')).toHaveText('online');
  await expect(bodies(b)).toHaveText(['before', ...twenty, 'written offline']);
  await expect(b.locator('#messages li.pending')).toHaveCount(0);
  await expect(bodies(a)).toHaveText(['before', ...twenty, 'written offline']);
  expect(await b.evaluate(() => window.sameDocument)).toBe(true);
});

test('someone who is not a member cannot open the chat', async ({ browser }) => {
  const { a, chatId } = await friends(browser);
  await send(a, 'for members only');
  await expect(a.locator('#messages li.pending')).toHaveCount(0);
  const carol = await (await browser.newContext()).newPage();
  await signUp(carol, unique('carol'));
  await carol.goto(`/#/chat/${chatId}`);
  await expect(carol.locator('#chat-note')).toHaveText('This chat does not exist, or you are not a member of it.');
  await expect(carol.locator('#chat-open')).toBeHidden();
  await expect(carol.getByText('for members only')).toHaveCount(0);
});

test('older messages load on scroll', async ({ browser }) => {
  const { a, b, an, chatId } = await friends(browser);
  // 120 messages over the API, more than two pages.
  const { token } = await a.evaluate(() => JSON.parse(localStorage.getItem('xfchat.session')));
  for (let i = 1; i <= 120; i += 1) {
    const res = await a.request.put(`/api/chats/${chatId}/messages/${crypto.randomUUID()}`, {
      headers: { authorization: `Bearer ${token}` },
      data: { body: `old ${i}` },
    });
    expect(res.status()).toBe(201);
  }
  await openChat(b, an);
  await expect(bodies(b)).toHaveCount(50);
  await expect(bodies(b).last()).toHaveText('old 120');
  for (const count of [100, 120]) {
    await b.locator('#scroller').evaluate((el) => {
      el.scrollTop = 0;
    });
    await expect(bodies(b)).toHaveCount(count);
  }
  await expect(bodies(b).first()).toHaveText('old 1');
  await expect(b.locator('#history-note')).toHaveText('The start of this chat.');
});

test('the page opens its socket with a single-use ticket, never a token in the URL, and keeps the session over a reload', async ({ browser }) => {
  const page = await (await browser.newContext()).newPage();
  const urls = [];
  page.on('websocket', (ws) => urls.push(ws.url()));
  await signUp(page, unique('tick'));
  await page.reload();
  await expect(page.locator('#conn')).toHaveText('online');
  expect(urls.length).toBeGreaterThanOrEqual(2);
  for (const url of urls) {
    expect(url).toContain('?ticket=');
    expect(url).not.toContain('token');
  }
  const saved = await page.evaluate(() => JSON.parse(localStorage.getItem('xfchat.session')));
  expect(saved.refreshToken).toBeTruthy();
});

/** The message item whose text holds `text`. */
const item = (page, text) => page.locator('#messages li.msg').filter({ has: page.locator('.body', { hasText: text }) });

test('edit, delete, react and reply, seen live by the other person', async ({ browser }, testInfo) => {
  const { a, b, an } = await friends(browser);
  await openChat(b, an);
  await send(a, 'lunch at noen?');
  await expect(bodies(b)).toHaveText(['lunch at noen?']);

  // Alice fixes her typo; bob sees the new text marked as edited, not a new message.
  await item(a, 'lunch at noen?').hover();
  await item(a, 'lunch at noen?').getByRole('button', { name: 'Edit' }).click();
  await expect(a.locator('#compose-what')).toHaveText('Editing your message');
  await a.locator('#body').fill('lunch at noon?');
  await a.locator('#body').press('Enter');
  await expect(bodies(b)).toHaveText(['lunch at noon?']);
  await expect(item(b, 'lunch at noon?').locator('.meta')).toContainText('edited');
  await expect(b.getByRole('button', { name: 'Edit' })).toHaveCount(0);

  // Bob reacts and replies; alice sees both.
  await item(b, 'lunch at noon?').hover();
  await item(b, 'lunch at noon?').getByRole('button', { name: 'React', exact: true }).click();
  await b.getByRole('button', { name: 'React 👍' }).click();
  await expect(item(a, 'lunch at noon?').getByRole('button', { name: '👍 1' })).toBeVisible();
  await expect(item(b, 'lunch at noon?').getByRole('button', { name: '👍 1, yours' })).toHaveAttribute('aria-pressed', 'true');
  await item(b, 'lunch at noon?').getByRole('button', { name: 'Reply' }).click();
  await expect(b.locator('#compose-what')).toHaveText(/^Replying to .*: lunch at noon\?$/);
  await send(b, 'yes!');
  await expect(bodies(a)).toHaveText(['lunch at noon?', 'yes!']);
  await expect(item(a, 'yes!').locator('.quote')).toContainText('lunch at noon?');
  await a.screenshot({ path: testInfo.outputPath('entries.png') });
  // Taking the reaction back.
  await item(b, 'lunch at noon?').getByRole('button', { name: '👍 1, yours' }).click();
  await expect(item(a, 'lunch at noon?').locator('.reaction')).toHaveCount(0);

  // Alice deletes her message for everyone; the reply's quote says so.
  a.once('dialog', (d) => d.accept());
  await item(a, 'lunch at noon?').hover();
  await item(a, 'lunch at noon?').getByRole('button', { name: 'Delete' }).click();
  await expect(bodies(b)).toHaveText(['This message was deleted', 'yes!']);
  await expect(item(b, 'yes!').locator('.quote')).toContainText('deleted message');
  // Entries are not unread, and the history shows the same after a reload.
  await b.reload();
  await expect(bodies(b)).toHaveText(['This message was deleted', 'yes!']);
  await expect(b.locator('#chat-list .badge')).toHaveCount(0);
});

test('the chat list shows previews, sorts by activity, and the tab title counts unread', async ({ browser }) => {
  const { a, b, an, bn } = await friends(browser);
  // A group of bob's, older than the direct chat's next message.
  await b.locator('#group-title').fill('weekend');
  await b.locator('#group-members').getByLabel(an).check();
  await b.getByRole('button', { name: 'Create group' }).click();
  await expect(b.locator('#chat-title')).toHaveText('weekend');
  await send(b, 'who is in?');
  await expect(a.locator('#chat-list li').first()).toContainText('weekend');
  await expect(a.locator('#chat-list li').first()).toContainText('who is in?');
  await openChat(b, an);
  await send(b, 'ping');
  // Alice has her direct chat open; the group waits with one unread.
  await expect(a.locator('#chat-list li').first()).toContainText(bn);
  await expect(a.locator('#chat-list li').first()).toContainText('ping');
  await expect(a).toHaveTitle('(1) XFChat');
  await a.getByRole('link', { name: /weekend/ }).click();
  await expect(a).toHaveTitle('XFChat');
});

test('right-to-left text is isolated, and a paste over the limit is refused visibly, not cut', async ({ browser }) => {
  const { a, b, an } = await friends(browser);
  await openChat(b, an);
  await send(a, 'שלום, מה שלומך?');
  await expect(bodies(b)).toHaveText(['שלום, מה שלומך?']);
  await expect(bodies(b).first()).toHaveAttribute('dir', 'auto');
  const long = 'x'.repeat(9000);
  await a.locator('#body').fill(long);
  await expect(a.locator('#count')).toHaveText('808 bytes too long (at most 8192)');
  await expect(a.locator('#send')).toBeDisabled();
  expect(await a.locator('#body').inputValue()).toHaveLength(9000);
  await a.locator('#body').fill('short again');
  await expect(a.locator('#send')).toBeEnabled();
  await expect(a.locator('#count')).toBeHidden();
});

test('on a phone-sized screen the list and a chat take turns, with a way back', async ({ browser }, testInfo) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await signUp(page, unique('phone'));
  await expect(page.locator('#chats-empty')).toBeVisible();
  await page.locator('#group-title').fill('notes');
  await page.getByRole('button', { name: 'Create group' }).click();
  await expect(page.locator('#chat-title')).toHaveText('notes');
  await expect(page.locator('#chat-list')).toBeHidden();
  await expect(page.locator('#history-note')).toHaveText('No messages yet. Say hello!');
  await send(page, 'first note');
  await expect(page.locator('#messages li.pending')).toHaveCount(0);
  await page.screenshot({ path: testInfo.outputPath('phone-chat.png') });
  await page.getByRole('button', { name: 'Back to chats' }).click();
  await expect(page.locator('#chat-list')).toBeVisible();
  await expect(page.locator('#chat-open')).toBeHidden();
  await expect(page.locator('#chat-list li').first()).toContainText('first note');
  await page.screenshot({ path: testInfo.outputPath('phone-list.png') });
});

test('search finds a message and opens its chat; a friend shows online, then last seen', async ({ browser }, testInfo) => {
  const { a, b, an, bn, contexts } = await friends(browser);
  await send(a, 'the blue whale sings at dawn');
  await expect(a.locator('#messages li.pending')).toHaveCount(0);
  await b.locator('#search-q').fill('whale');
  await b.locator('#search-q').press('Enter');
  const hit = b.locator('#search-results a').first();
  await expect(hit.locator('mark')).toHaveText('whale');
  await expect(hit).toContainText('the blue whale sings at dawn');
  await b.screenshot({ path: testInfo.outputPath('search.png') });
  await hit.click();
  await expect(b.locator('#chat-title')).toHaveText(an);
  await b.locator('#search-q').fill('nothing-like-this');
  await b.locator('#search-q').press('Enter');
  await expect(b.locator('#search-note')).toHaveText('Nothing found for “nothing-like-this”.');

  const bobAtAlice = a.locator('#friend-list li').filter({ hasText: bn });
  await expect(bobAtAlice.locator('.presence')).toHaveText('online');
  await expect(a.locator('#chat-presence')).toHaveText('online');
  await contexts[1].close();
  await expect(bobAtAlice.locator('.presence')).toHaveText(/^last seen /);
  await expect(a.locator('#chat-presence')).toHaveText(/^last seen /);
  await expect(bobAtAlice.locator('.dot')).not.toHaveClass(/on/);
});

test('a group creator adds and removes members, a member leaves, and a direct chat offers block', async ({ browser }, testInfo) => {
  const { a, b, an, bn } = await friends(browser);
  a.on('dialog', (d) => d.accept());
  b.on('dialog', (d) => d.accept());
  await a.locator('#group-title').fill('crew');
  await a.getByRole('button', { name: 'Create group' }).click();
  await expect(a.locator('#chat-title')).toHaveText('crew');
  await a.getByRole('button', { name: 'Details' }).click();
  await expect(a.locator('#member-list li')).toHaveText([`${an} (you)`]);
  await a.locator('#add-who').selectOption({ label: bn });
  await a.locator('#add-form').getByRole('button', { name: 'Add' }).click();
  await expect(a.locator('#member-list li')).toHaveCount(2);
  await expect(b.getByRole('link', { name: /crew/ })).toBeVisible();
  await a.screenshot({ path: testInfo.outputPath('details.png') });

  await a.getByRole('button', { name: `Remove ${bn}` }).click();
  await expect(a.locator('#member-list li')).toHaveCount(1);
  await expect(b.getByRole('link', { name: /crew/ })).toHaveCount(0);

  await a.locator('#add-who').selectOption({ label: bn });
  await a.locator('#add-form').getByRole('button', { name: 'Add' }).click();
  await b.getByRole('link', { name: /crew/ }).click();
  await b.getByRole('button', { name: 'Details' }).click();
  await expect(b.getByRole('button', { name: `Remove ${an}` })).toHaveCount(0);
  await b.getByRole('button', { name: 'Leave group' }).click();
  await expect(b.locator('#chat-note')).toHaveText('You are no longer in this chat.');
  await expect(a.locator('#member-list li')).toHaveCount(1);

  // In their direct chat, bob blocks alice: she is no longer his friend.
  await openChat(b, an);
  await b.getByRole('button', { name: 'Block' }).click();
  await expect(b.locator('#friend-list li').filter({ hasText: an })).toHaveCount(0);
});

// A 1×1 PNG.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');

test('a picture picked or a file dropped is sent as an attachment: images shown, files offered for download', async ({ browser }, testInfo) => {
  const { a, b, an } = await friends(browser);
  await openChat(b, an);
  await a.locator('#file').setInputFiles({ name: 'dot.png', mimeType: 'image/png', buffer: PNG });
  await expect(a.locator('#files li')).toHaveText(['dot.png×']);
  await a.locator('#body').press('Enter');
  await expect(a.locator('#files li')).toHaveCount(0);
  const picture = b.locator('#messages li.msg img');
  await expect(picture).toHaveAttribute('alt', 'attached image');
  await expect.poll(() => picture.evaluate((img) => img.naturalWidth)).toBe(1);

  // A file dropped onto the chat, with a caption.
  const drop = await a.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['plain notes'], 'notes.txt', { type: 'text/plain' }));
    return dt;
  });
  await a.dispatchEvent('#chat-open', 'drop', { dataTransfer: drop });
  await expect(a.locator('#files li')).toHaveText(['notes.txt×']);
  await send(a, 'the notes');
  await expect(b.locator('#messages li.msg').last().getByRole('link', { name: /Download file/ })).toBeVisible();
  await expect(bodies(b).last()).toHaveText('the notes');
  await b.screenshot({ path: testInfo.outputPath('attachments.png') });
});
