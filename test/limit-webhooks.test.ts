import { createHmac } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIGNATURE_HEADER } from '../src/metering/limit-alerts.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { OPENAI_BODY, call, usageOf } from './support/http.js';

const SECRET = 'webhook-secret-for-tests-0123456789';

interface Delivery {
  path: string | undefined;
  signature: string | undefined;
  body: string;
  json: { threshold: number; key: { id: string }; limit: { limit_type: string }; current_value: number };
}

let receiver: Server;
const deliveries: Delivery[] = [];
/** the receiver answers 500 this many more times before it accepts */
let failures = 0;
let gw: TestGateway;
let base: string;

beforeAll(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      deliveries.push({ path: req.url, signature: req.headers[SIGNATURE_HEADER] as string | undefined, body, json: JSON.parse(body) });
      res.statusCode = failures-- > 0 ? 500 : 204;
      res.end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  gw = await startTestGateway({ config: () => ({ webhook: { url: `${base}/hook`, secret: SECRET } }) });
});
afterAll(async () => {
  await gw.close();
  await new Promise((resolve) => receiver.close(resolve));
});

describe('limit webhooks', () => {
  it('POSTs once at 80 % and once at 100 % of a limit, signed, retried until the receiver takes it', async () => {
    const key = await gw.createKey({ limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 5 }] });
    failures = 1;
    for (let i = 1; i <= 5; i++) {
      expect((await call(gw.url, '/v1/responses', { method: 'POST', headers: { 'x-api-key': key.secret }, body: OPENAI_BODY })).status).toBe(200);
      // each request's usage lands before the next: crossings are checked when it does
      await expect.poll(async () => (await usageOf(gw, key.secret)).request_count).toBe(i);
    }
    // 80 % (4 of 5): refused once, then delivered; 100 %: delivered
    await expect.poll(() => deliveries.filter((d) => d.json.key.id === key.id).length, { timeout: 20_000 }).toBe(3);
    const mine = deliveries.filter((d) => d.json.key.id === key.id);
    // the retry of the refused one may come after the 100 % one
    expect(mine.map((d) => d.json.threshold).sort()).toEqual([0.8, 0.8, 1]);
    const [refused, retried] = mine.filter((d) => d.json.threshold === 0.8);
    expect(retried!.body).toBe(refused!.body);
    for (const d of mine) expect(d.signature).toBe(`sha256=${createHmac('sha256', SECRET).update(d.body).digest('hex')}`);
    expect(mine.find((d) => d.json.threshold === 1)!.json).toMatchObject({ limit: { limit_type: 'requests' }, current_value: 5 });

    // more usage in the same window announces nothing new
    expect((await call(gw.url, '/v1/responses', { method: 'POST', headers: { 'x-api-key': key.secret }, body: OPENAI_BODY })).status).toBe(429);
    expect(new Set(mine.map((d) => d.path))).toEqual(new Set(['/hook']));
    // a key with a webhook of its own: its crossings go there instead
    const other = await gw.createKey({ limits: [{ limit_type: 'requests', limit_window: 'daily', max_value: 1 }] });
    await gw.store.putKey({ ...(await gw.store.getKeyById(other.id))!, webhook_url: `${base}/team-hook` });
    expect((await call(gw.url, '/v1/responses', { method: 'POST', headers: { 'x-api-key': other.secret }, body: OPENAI_BODY })).status).toBe(200);
    // a later crossing of another key arrives after ours: nothing of ours came in between
    await expect.poll(() => deliveries.filter((d) => d.json.key.id === other.id).length, { timeout: 20_000 }).toBe(2);
    expect(new Set(deliveries.filter((d) => d.json.key.id === other.id).map((d) => d.path))).toEqual(new Set(['/team-hook']));
    expect(deliveries.filter((d) => d.json.key.id === key.id)).toHaveLength(3);
  });
});
