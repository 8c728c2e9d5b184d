/**
 * The console's home page: who is signed in, with which role, and what needs
 * attention. Data comes from the dashboard handler in admin/index.ts.
 */
import React, { useEffect, useState } from 'react';
import { Box, H2, H5, Text } from '@adminjs/design-system';
import { ApiClient, useCurrentAdmin } from 'adminjs';

interface DashboardData {
  operators?: { total: number; enabled: number };
  jobs?: { queued: number; locked: number; failing: number; permanentlyFailed: number } | null;
}

const api = new ApiClient();

const Figure: React.FC<{ label: string; value: number | string | undefined; testId: string }> = ({ label, value, testId }) => (
  <Box variant="card" mr="lg" mb="lg" p="lg" style={{ minWidth: 180 }}>
    <Text color="grey60">{label}</Text>
    <H2 data-testid={testId}>{value ?? '…'}</H2>
  </Box>
);

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
