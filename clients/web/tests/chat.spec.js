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
  await b.getByRole('link', { name: an }).click();
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
  await b.getByRole('link', { name: an }).click();
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
