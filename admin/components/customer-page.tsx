/**
 * A customer's page: one search box (e-mail, external id, id, invoice number
 * or provider payment id), the matches, and the chosen customer's timeline,
 * newest first, each entry linking to its record. The page handler
 * (admin/pages/customer.ts) reads the SQL functions and formats the money;
 * this component only renders. The query lives in the page's URL, so a
 * timeline can be linked to and reloaded.
 */
import React, { useEffect, useState } from 'react';
import { Badge, Box, Button, H2, H5, Input, MessageBox, Table, TableBody, TableCell, TableHead, TableRow, Text } from '@adminjs/design-system';
import { ApiClient } from 'adminjs';

interface CustomerSummary {
  id: string;
  email: string;
  name: string;
  externalId: string;
  tenant: string;
  createdAt: string;
  href: string;
}

interface TimelineEntry {
  at: string;
  entryId: string;
  kind: string;
  title: string;
  status: string | null;
  amount: string | null;
  detail: string | null;
  href: string;
}

interface CustomerPageData {
  query?: string;
  matches?: CustomerSummary[];
  customer?: CustomerSummary;
  timeline?: TimelineEntry[];
  older?: { olderThan: string; olderThanId: string };
  error?: { code: string; message: string };
}

type Params = Record<string, string>;

const api = new ApiClient();

const KIND_LABELS: Record<string, string> = {
  subscription: 'Subscription',
  subscription_status: 'Status',
  invoice: 'Invoice',
  payment: 'Payment',
  refund: 'Refund',
  balance: 'Balance',
  email: 'E-mail',
  webhook_delivery: 'Webhook',
};

const BAD = new Set(['failed', 'past_due', 'canceled', 'incomplete_expired', 'uncollectible', 'void', 'gave_up']);
const GOOD = new Set(['succeeded', 'paid', 'active', 'sent', 'trialing']);

function statusVariant(status: string | null): 'danger' | 'success' | 'info' {
  if (status && BAD.has(status)) return 'danger';
  if (status && GOOD.has(status)) return 'success';
  return 'info';
}

function readParams(): Params {
  const params: Params = {};
  new URLSearchParams(window.location.search).forEach((value, name) => {
    if (['q', 'customer_id', 'older_than', 'older_than_id'].includes(name)) params[name] = value;
  });
  return params;
}

function pageUrl(params: Params): string {
  const search = new URLSearchParams(params).toString();
  return `${window.location.pathname}${search ? `?${search}` : ''}`;
}

const CustomerPage: React.FC = () => {
  const [params, setParams] = useState<Params>(readParams);
  const [typed, setTyped] = useState<string>(params.q ?? '');
  const [data, setData] = useState<CustomerPageData | null>(null);
  const [loading, setLoading] = useState(false);
  const [failed, setFailed] = useState(false);

  useEffect(() => {
    setLoading(true);
    window.history.replaceState(null, '', pageUrl(params));
    api
      .getPage({ pageName: 'customer', params })
      .then((response) => {
        setData(response.data as CustomerPageData);
        setFailed(false);
      })
      .catch(() => setFailed(true))
      .finally(() => setLoading(false));
  }, [params]);

  const search = (event: React.FormEvent) => {
    event.preventDefault();
    setParams(typed.trim() ? { q: typed.trim() } : {});
  };
  const customer = data?.customer;
  return (
    <Box variant="grey" data-testid="customer-page">
      <Box variant="white" p="xl" mb="lg">
        <H2>Customer page</H2>
        <form onSubmit={search} data-testid="customer-search">
          <Box flex flexDirection="row" alignItems="center">
            <Input
              name="q"
              value={typed}
              onChange={(e: React.ChangeEvent<HTMLInputElement>) => setTyped(e.target.value)}
              placeholder="E-mail, external id, customer id, invoice number or provider payment id"
              style={{ width: 520 }}
              data-testid="customer-search-input"
            />
            <Button ml="default" type="submit" data-testid="customer-search-submit">
              Find
            </Button>
          </Box>
        </form>
        <Text mt="default" color="grey60">
          Exact matches only: type the whole e-mail, id or number.
        </Text>
      </Box>
      {failed ? <MessageBox variant="danger" message="The page could not be loaded." /> : null}
      {data?.error ? <MessageBox variant="danger" message={`${data.error.code}: ${data.error.message}`} data-testid="customer-error" /> : null}
      {loading && !data ? <Text>Loading…</Text> : null}
      {data?.query !== undefined && data.matches?.length === 0 ? (
        <Box variant="white" p="xl" mb="lg" data-testid="customer-no-match">
          <Text>No customer has exactly “{data.query}”. Check the spelling, or search by another identifier.</Text>
        </Box>
      ) : null}
      {data?.matches && data.matches.length > 1 ? (
        <Box variant="white" p="xl" mb="lg" data-testid="customer-matches">
          <H5>{data.matches.length} customers match</H5>
          {data.matches.map((m) => (
            <Box key={m.id} mb="sm">
              <a
                href={pageUrl({ customer_id: m.id })}
                onClick={(e) => {
                  e.preventDefault();
                  setParams({ customer_id: m.id });
                }}
              >
                {m.email}
              </a>{' '}
              <Text as="span" color="grey60">
                {m.name} · {m.externalId} · {m.tenant}
              </Text>
            </Box>
          ))}
        </Box>
      ) : null}
      {customer ? (
        <Box variant="white" p="xl" data-testid="customer-timeline">
          <H5>
            <a href={customer.href}>{customer.email}</a> {customer.name ? `· ${customer.name}` : ''}
          </H5>
          <Text color="grey60" mb="lg">
            external id {customer.externalId} · {customer.tenant} · customer since {customer.createdAt.slice(0, 10)}
          </Text>
          {data?.timeline && data.timeline.length === 0 ? <Text data-testid="timeline-empty">Nothing has happened to this customer's money yet.</Text> : null}
          {data?.timeline && data.timeline.length > 0 ? (
            <Table>
              <TableHead>
                <TableRow>
                  <TableCell>When (UTC)</TableCell>
                  <TableCell>What</TableCell>
                  <TableCell>Record</TableCell>
                  <TableCell>Status</TableCell>
                  <TableCell>Amount</TableCell>
                  <TableCell>Details</TableCell>
                </TableRow>
              </TableHead>
              <TableBody>
                {data.timeline.map((e) => (
                  <TableRow key={e.entryId} data-testid={`timeline-${e.kind}`}>
                    <TableCell title={e.at} style={{ whiteSpace: 'nowrap' }}>
                      {e.at.slice(0, 16).replace('T', ' ')}
                    </TableCell>
                    <TableCell style={{ whiteSpace: 'nowrap' }}>{KIND_LABELS[e.kind] ?? e.kind}</TableCell>
                    <TableCell>
                      <a href={e.href} data-testid="timeline-link">
                        {e.title}
                      </a>
                    </TableCell>
                    <TableCell>{e.status ? <Badge variant={statusVariant(e.status)}>{e.status}</Badge> : null}</TableCell>
                    <TableCell style={{ whiteSpace: 'nowrap', textAlign: 'right' }}>{e.amount ?? ''}</TableCell>
                    <TableCell>{e.detail ?? ''}</TableCell>
                  </TableRow>
                ))}
              </TableBody>
            </Table>
          ) : null}
          {data?.older ? (
            <Box mt="lg">
              <Button
                variant="outlined"
                data-testid="timeline-older"
                onClick={() => setParams({ customer_id: customer.id, older_than: data.older!.olderThan, older_than_id: data.older!.olderThanId })}
              >
                Older
              </Button>
            </Box>
          ) : null}
        </Box>
      ) : null}
    </Box>
  );
};

export default CustomerPage;
