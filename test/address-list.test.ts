/** Address lists (lib/address-list.ts) and the settings built on them: YOOKASSA_WEBHOOK_SOURCES, TRUST_PROXY. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseAddressList } from '../lib/address-list.ts';
import { parseConfig, trustProxySetting } from '../lib/config.ts';
import { YOOKASSA_NOTIFICATION_RANGES } from '../providers/yookassa.ts';

describe('parseAddressList', () => {
  const yookassa = parseAddressList(YOOKASSA_NOTIFICATION_RANGES);

  test("YooKassa's ranges: their edges in, their neighbours out; IPv6 and IPv4-mapped IPv6", () => {
    for (const inside of [
      '185.71.76.0',
      '185.71.76.31',
      '185.71.77.17',
      '77.75.153.127',
      '77.75.156.11',
      '77.75.156.35',
      '77.75.154.200',
      '2a02:5180::1',
      '2A02:5180:ffff::9',
      '::ffff:185.71.76.10',
    ]) {
      assert.equal(yookassa.allows(inside), true, inside);
    }
    for (const outside of ['185.71.76.32', '185.71.75.255', '77.75.153.128', '77.75.156.12', '77.75.154.127', '2a02:5181::1', '127.0.0.1', '::1', '::ffff:127.0.0.1', '10.0.0.1']) {
      assert.equal(yookassa.allows(outside), false, outside);
    }
  });

  test('anything that is not an address is not allowed, never a throw', () => {
    for (const junk of [undefined, '', 'localhost', '185.71.76.10, 1.2.3.4', '185.71.76.10:443', '999.1.1.1']) assert.equal(yookassa.allows(junk), false, String(junk));
  });

  test('bad entries are refused when the list is read', () => {
    for (const bad of ['yookassa.ru', '185.71.76.0/33', '2a02::/129', '1.2.3.4/8/1', '1.2.3.4/x'])
      assert.throws(() => parseAddressList(bad), /is not an IP address|bad prefix length/, bad);
    assert.deepEqual(parseAddressList(' 10.0.0.0/8, 192.0.2.1 ').entries, ['10.0.0.0/8', '192.0.2.1']);
  });
});

describe('configuration', () => {
  test('YOOKASSA_WEBHOOK_SOURCES is `any` or a list of addresses and blocks', () => {
    assert.doesNotThrow(() => parseConfig({ YOOKASSA_WEBHOOK_SOURCES: 'any' }));
    assert.doesNotThrow(() => parseConfig({ YOOKASSA_WEBHOOK_SOURCES: '185.71.76.0/27,2a02:5180::/32' }));
    assert.throws(() => parseConfig({ YOOKASSA_WEBHOOK_SOURCES: 'yookassa.ru' }), /YOOKASSA_WEBHOOK_SOURCES must be/);
  });

  test('TRUST_PROXY takes hops or a list, never `true`; unset trusts no proxy', () => {
    assert.equal(trustProxySetting(parseConfig({})), false);
    assert.equal(trustProxySetting(parseConfig({ TRUST_PROXY: '1' })), 1);
    assert.deepEqual(trustProxySetting(parseConfig({ TRUST_PROXY: 'loopback, 10.0.0.0/8' })), ['loopback', '10.0.0.0/8']);
    for (const bad of ['true', '*', 'proxy.internal']) assert.throws(() => parseConfig({ TRUST_PROXY: bad }), /TRUST_PROXY must be/, bad);
  });
});
