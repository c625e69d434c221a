// Browser tests of the web chat in Debian's Chromium (CHROMIUM, /usr/bin/chromium by default),
// against the server at XFCHAT_URL that scripts/test-clients starts. One worker: the tests share
// that server and one browser.
import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: './tests',
  workers: 1,
  timeout: 60_000,
  expect: { timeout: 15_000 },
  reporter: [['list']],
  outputDir: '../test-results',
  use: {
    baseURL: process.env.XFCHAT_URL,
    headless: true,
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      // No sandbox when run as root; the rest keeps Chromium off the network it must not use.
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    },
  },
});
