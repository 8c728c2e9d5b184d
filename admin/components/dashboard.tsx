/**
 * The console's home page: who is signed in, with which role, and what needs
 * attention. Data comes from the dashboard handler in admin/index.ts.
 */
import React, { useEffect, useState } from 'react';
import { Box, H2, H5, Text } from '@adminjs/design-system';
import { ApiClient, useCurrentAdmin } from 'adminjs';

interface BillingSummary {
  activeSubscriptions: string;
  activeSubscriptionsEstimated: boolean;
  pastDueSubscriptions: string;
  paymentsFailed24h: string;
  refundsPending: string;
  paymentsToReview: string;
  jobsFailing: string;
}

interface DashboardData {
  billing?: BillingSummary | null;
  operators?: { total: number; enabled: number };
  jobs?: { queued: number; locked: number; failing: number; permanentlyFailed: number } | null;
}

const api = new ApiClient();

const Figure: React.FC<{ label: string; value: number | string | undefined; testId: string; href?: string }> = ({ label, value, testId, href }) => (
  <Box variant="card" mr="lg" mb="lg" p="lg" style={{ minWidth: 180 }}>
    <Text color="grey60">{href ? <a href={href}>{label}</a> : label}</Text>
    <H2 data-testid={testId}>{value ?? '…'}</H2>
  </Box>
);

/** Links into lists, filtered as AdminJS's own filter drawer would. */
const list = (resource: string, filters: Record<string, string> = {}) =>
  `/admin/resources/${resource}${Object.keys(filters).length ? `?${new URLSearchParams(Object.fromEntries(Object.entries(filters).map(([k, v]) => [`filters.${k}`, v]))).toString()}` : ''}`;

const Dashboard: React.FC = () => {
  const [currentAdmin] = useCurrentAdmin();
  const [data, setData] = useState<DashboardData | null>(null);
  const [failed, setFailed] = useState(false);

  useEffect(() => {
    api
      .getDashboard<DashboardData>()
      .then((response) => setData(response.data))
      .catch(() => setFailed(true));
  }, []);

  const role = (currentAdmin as { role?: string } | null)?.role;
  return (
    <Box variant="grey" data-testid="console-dashboard">
      <Box variant="white" p="xl" mb="lg">
        <H2>abonement operator console</H2>
        <Text data-testid="signed-in-as">
          Signed in as <strong>{currentAdmin?.email}</strong> with role <strong data-testid="operator-role">{role}</strong>.
        </Text>
      </Box>
      {failed ? <Text>The dashboard figures could not be loaded.</Text> : null}
      {data?.billing ? (
        <>
          <H5 mb="default">Billing</H5>
          <Box flex flexDirection="row" flexWrap="wrap" data-testid="billing-figures">
            <Figure
              label={data.billing.activeSubscriptionsEstimated ? 'Active subscriptions (≈, from statistics)' : 'Active subscriptions'}
              value={data.billing.activeSubscriptions}
              testId="billing-active"
              href={list('subscriptions', { status: 'active' })}
            />
            <Figure label="Past due" value={data.billing.pastDueSubscriptions} testId="billing-past-due" href={list('subscriptions', { status: 'past_due' })} />
            <Figure label="Payments failed (24 h)" value={data.billing.paymentsFailed24h} testId="billing-failed-24h" href={list('payments', { status: 'failed' })} />
            <Figure label="Refunds pending" value={data.billing.refundsPending} testId="billing-refunds-pending" href={list('refunds', { status: 'pending' })} />
            <Figure label="Payments to review" value={data.billing.paymentsToReview} testId="billing-to-review" href={list('payment_reviews')} />
            <Figure label="Jobs failing" value={data.billing.jobsFailing} testId="billing-jobs-failing" href={list('jobs')} />
          </Box>
        </>
      ) : null}
      <H5 mb="default">Operators</H5>
      <Box flex flexDirection="row" flexWrap="wrap">
        <Figure label="Operators" value={data?.operators?.total} testId="operators-total" />
        <Figure label="Enabled" value={data?.operators?.enabled} testId="operators-enabled" />
      </Box>
      {data?.jobs ? (
        <>
          <H5 mb="default">Background jobs</H5>
          <Box flex flexDirection="row" flexWrap="wrap">
            <Figure label="Queued" value={data.jobs.queued} testId="jobs-queued" />
            <Figure label="Running" value={data.jobs.locked} testId="jobs-locked" />
            <Figure label="Failing (will retry)" value={data.jobs.failing} testId="jobs-failing" />
            <Figure label="Permanently failed" value={data.jobs.permanentlyFailed} testId="jobs-failed" />
          </Box>
        </>
      ) : null}
    </Box>
  );
};

export default Dashboard;
