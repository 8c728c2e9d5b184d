/**
 * The sandbox gateway's hosted pages: plain HTML forms, inline CSS, no script
 * and no external asset, so they work offline and in any test browser.
 */
import { escapeHtml } from '../lib/html.ts';
import { minorToDecimal } from '../lib/money.ts';
import { sandboxTestCards } from './cards.ts';

const style = `
  body { font: 16px/1.45 system-ui, sans-serif; background: #f4f5f7; color: #1d2330; margin: 0; }
  main { max-width: 28rem; margin: 3rem auto; background: #fff; border-radius: 10px; padding: 2rem;
         box-shadow: 0 1px 4px rgba(0,0,0,.12); }
  h1 { font-size: 1.25rem; margin: 0 0 .25rem; }
  .amount { font-size: 1.75rem; font-weight: 600; margin: .5rem 0 1.5rem; }
  .banner { background: #fff4d6; border: 1px solid #e8c766; border-radius: 6px; padding: .5rem .75rem; font-size: .85rem; }
  .error { background: #fde8e8; border: 1px solid #e38b8b; border-radius: 6px; padding: .5rem .75rem; margin: 1rem 0; }
  label { display: block; margin: 1rem 0 .25rem; font-size: .9rem; }
  input { width: 100%; box-sizing: border-box; font: inherit; padding: .55rem .6rem; border: 1px solid #b9bfcc; border-radius: 6px; }
  .row { display: flex; gap: 1rem; } .row > div { flex: 1; }
  button { font: inherit; margin-top: 1.5rem; width: 100%; padding: .7rem; border: 0; border-radius: 6px; background: #3451d1; color: #fff; cursor: pointer; }
  button.secondary { background: #8a2a2a; }
  a { color: #3451d1; }
  details { margin-top: 1.5rem; font-size: .85rem; } td { padding: .1rem .5rem .1rem 0; vertical-align: top; }
  code { font-size: .85rem; }
`;

export function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>${escapeHtml(title)}</title><style>${style}</style></head>
<body><main><p class="banner">Sandbox gateway — test mode. No real card is charged.</p>${body}</main></body></html>`;
}

export interface CheckoutView {
  id: string;
  description: string;
  amountMinor: bigint;
  currency: string;
  cancelPath: string;
}

export function checkoutPage(view: CheckoutView, error?: string): string {
  const cards = sandboxTestCards.map((card) => `<tr><td><code>${card.number.replace(/(\d{4})(?=\d)/g, '$1 ')}</code></td><td>${escapeHtml(card.description)}</td></tr>`).join('');
  return page(
    'Pay — sandbox',
    `<h1>${escapeHtml(view.description || 'Payment')}</h1>
<p class="amount" data-testid="amount">${escapeHtml(minorToDecimal(view.amountMinor, view.currency))} ${escapeHtml(view.currency)}</p>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" autocomplete="off">
  <label for="number">Card number</label>
  <input id="number" name="number" inputmode="numeric" placeholder="4242 4242 4242 4242" required>
  <div class="row">
    <div><label for="expiry">Expiry (MM/YY)</label><input id="expiry" name="expiry" placeholder="12/34" required></div>
    <div><label for="cvc">CVC</label><input id="cvc" name="cvc" inputmode="numeric" placeholder="123" required></div>
  </div>
  <label for="name">Name on card</label>
  <input id="name" name="name" placeholder="Ada Lovelace">
  <button type="submit" id="pay">Pay</button>
</form>
<p><a href="${escapeHtml(view.cancelPath)}" id="cancel">Cancel and return</a></p>
<details><summary>Test cards</summary><table>${cards}</table><p>Any future expiry date and any 3-digit CVC.</p></details>`,
  );
}

export function challengePage(description: string, amountMinor: bigint, currency: string): string {
  return page(
    '3-D Secure — sandbox',
    `<h1>3-D Secure authentication</h1>
<p>Your bank asks you to confirm a payment of <strong>${escapeHtml(minorToDecimal(amountMinor, currency))} ${escapeHtml(currency)}</strong>${description ? ` for ${escapeHtml(description)}` : ''}.</p>
<form method="post"><input type="hidden" name="outcome" value="approve"><button type="submit" id="approve">Complete authentication</button></form>
<form method="post"><input type="hidden" name="outcome" value="fail"><button type="submit" id="fail" class="secondary">Fail authentication</button></form>`,
  );
}

export function messagePage(title: string, message: string, link?: { href: string; text: string }): string {
  return page(
    `${title} — sandbox`,
    `<h1>${escapeHtml(title)}</h1><p id="message">${escapeHtml(message)}</p>${link ? `<p><a href="${escapeHtml(link.href)}">${escapeHtml(link.text)}</a></p>` : ''}`,
  );
}
