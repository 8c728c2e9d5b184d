/**
 * Exact conversions between integer minor units and decimal strings, and the
 * failure-classification helpers every adapter shares.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { classify, classifyNetworkError } from '../../providers/failures.ts';
import { assertChargeable, currencyExponent, decimalToMinor, integerToMinor, minorToDecimal, minorToSafeNumber } from '../../lib/money.ts';

describe('money', () => {
  test('minor units to decimal strings by the ISO-4217 exponent', () => {
    assert.equal(minorToDecimal(12_345n, 'RUB'), '123.45');
    assert.equal(minorToDecimal(5n, 'EUR'), '0.05');
    assert.equal(minorToDecimal(0n, 'USD'), '0.00');
    assert.equal(minorToDecimal(500n, 'JPY'), '500');
    assert.equal(minorToDecimal(1_234n, 'KWD'), '1.234');
    assert.equal(minorToDecimal(-150n, 'EUR'), '-1.50');
    assert.equal(minorToDecimal(9_007_199_254_740_993n, 'RUB'), '90071992547409.93');
  });

  test('decimal strings to minor units, exactly, refusing sub-minor amounts', () => {
    assert.equal(decimalToMinor('123.45', 'RUB'), 12_345n);
    assert.equal(decimalToMinor('100', 'RUB'), 10_000n);
    assert.equal(decimalToMinor('100.5', 'RUB'), 10_050n);
    assert.equal(decimalToMinor('0.10', 'EUR'), 10n);
    assert.equal(decimalToMinor('1.230', 'EUR'), 123n, 'trailing zeros are fine');
    assert.equal(decimalToMinor('500', 'JPY'), 500n);
    assert.equal(decimalToMinor('90071992547409.93', 'RUB'), 9_007_199_254_740_993n);
    assert.throws(() => decimalToMinor('1.005', 'EUR'), RangeError);
    assert.throws(() => decimalToMinor('1e3', 'EUR'), RangeError);
    assert.throws(() => decimalToMinor(' 1.00', 'EUR'), RangeError);
    assert.throws(() => decimalToMinor('1.00', 'eur'), RangeError);
  });

  test('round trip for every exponent', () => {
    for (const [currency, exponent] of [
      ['EUR', 2],
      ['JPY', 0],
      ['BHD', 3],
      ['CLF', 4],
    ] as const) {
      assert.equal(currencyExponent(currency), exponent);
      for (const minor of [0n, 1n, 99n, 100n, 101n, 123_456_789n]) assert.equal(decimalToMinor(minorToDecimal(minor, currency), currency), minor);
    }
  });

  test('guards for provider calls', () => {
    assert.throws(() => assertChargeable({ amountMinor: 0n, currency: 'EUR' }, ['EUR']), /positive/);
    assert.throws(() => assertChargeable({ amountMinor: 10n, currency: 'GBP' }, ['EUR']), /not supported/);
    assert.throws(() => assertChargeable({ amountMinor: 10 as unknown as bigint, currency: 'EUR' }, ['EUR']), /bigint/);
    assert.throws(() => minorToSafeNumber(2n ** 53n), RangeError);
    assert.equal(minorToSafeNumber(2n ** 53n - 1n), Number.MAX_SAFE_INTEGER);
    assert.equal(integerToMinor(1500), 1500n);
    assert.equal(integerToMinor('1500'), 1500n);
    assert.throws(() => integerToMinor(15.5), RangeError);
  });
});

describe('failure classification helpers', () => {
  test('the most specific code wins; unmapped codes are soft declines and say so', () => {
    const table = { insufficient_funds: 'soft_decline', stolen_card: 'hard_decline', card_declined: 'soft_decline' } as const;
    assert.deepEqual(classify(table, ['stolen_card', 'card_declined']), { class: 'hard_decline', code: 'stolen_card', mapped: true });
    assert.deepEqual(classify(table, [undefined, 'card_declined']), { class: 'soft_decline', code: 'card_declined', mapped: true });
    assert.deepEqual(classify(table, ['brand_new_code']), { class: 'soft_decline', code: 'brand_new_code', mapped: false });
    assert.deepEqual(classify(table, ['toString']), { class: 'soft_decline', code: 'toString', mapped: false }, 'no prototype lookups');
  });

  test('network errors: refused before sending is a gateway error; anything after sending is unknown', () => {
    const refused = Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }) });
    assert.deepEqual([classifyNetworkError(refused).class, classifyNetworkError(refused).code], ['gateway_error', 'connection_refused']);
    assert.equal(classifyNetworkError(new DOMException('timed out', 'TimeoutError')).class, 'unknown');
    const reset = Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }) });
    assert.equal(classifyNetworkError(reset).class, 'unknown');
    assert.equal(classifyNetworkError(new Error('mystery')).class, 'unknown', 'when in doubt, reconcile');
  });
});
