/**
 * The Reports page: pick a report and, optionally, a tenant; the page handler
 * (admin/pages/reports.ts) reads the app_reports view and answers with rows.
 * Money columns are minor units of their row's currency.
 */
import React, { useEffect, useState } from 'react';
import { Box, H2, MessageBox, Table, TableBody, TableCell, TableHead, TableRow, Text } from '@adminjs/design-system';
import { ApiClient } from 'adminjs';

interface ReportsPageData {
  reports: Array<{ name: string; label: string; description: string }>;
  tenants: Array<{ id: string; name: string }>;
  report?: string;
  tenantId?: string | null;
  columns?: string[];
  rows?: Array<Record<string, unknown>>;
  truncated?: boolean;
  error?: { code: string; message: string };
}

const api = new ApiClient();

function cell(value: unknown): string {
  if (value === null || value === undefined) return '';
  // Dates of month columns arrive as ISO timestamps at midnight: the day is what matters.
  if (typeof value === 'string' && /^\d{4}-\d{2}-\d{2}T00:00:00(\.000)?Z$/.test(value)) return value.slice(0, 10);
  return String(value);
}

const Reports: React.FC = () => {
  const [report, setReport] = useState<string>('');
  const [tenantId, setTenantId] = useState<string>('');
  const [data, setData] = useState<ReportsPageData | null>(null);
  const [loading, setLoading] = useState(true);
  const [failed, setFailed] = useState(false);

  useEffect(() => {
    setLoading(true);
    api
      .getPage({ pageName: 'reports', params: { report: report || undefined, tenant_id: tenantId || undefined } })
      .then((response) => {
        setData(response.data as ReportsPageData);
        setFailed(false);
      })
      .catch(() => setFailed(true))
      .finally(() => setLoading(false));
  }, [report, tenantId]);

  if (data?.error) {
    return (
      <Box variant="white" p="xl" data-testid="reports-page">
        <MessageBox variant="danger" message={`${data.error.code}: ${data.error.message}`} data-testid="reports-error" />
      </Box>
    );
  }
  const current = data?.reports.find((r) => r.name === data.report);
  return (
    <Box variant="grey" data-testid="reports-page">
      <Box variant="white" p="xl" mb="lg">
        <H2>Reports</H2>
        <Box flex flexDirection="row" flexWrap="wrap" mb="default">
          <Box mr="xl" mb="default">
            <Text as="label" htmlFor="report-select" mr="default">
              Report
            </Text>
            <select id="report-select" data-testid="report-select" value={data?.report ?? report} onChange={(e) => setReport(e.target.value)} style={{ padding: 6 }}>
              {(data?.reports ?? []).map((r) => (
                <option key={r.name} value={r.name}>
                  {r.label}
                </option>
              ))}
            </select>
          </Box>
          <Box mb="default">
            <Text as="label" htmlFor="tenant-select" mr="default">
              Tenant
            </Text>
            <select id="tenant-select" data-testid="tenant-select" value={tenantId} onChange={(e) => setTenantId(e.target.value)} style={{ padding: 6 }}>
              <option value="">All tenants</option>
              {(data?.tenants ?? []).map((t) => (
                <option key={t.id} value={t.id}>
                  {t.name}
                </option>
              ))}
            </select>
          </Box>
        </Box>
        {current ? <Text color="grey60">{current.description}</Text> : null}
      </Box>
      {failed ? <MessageBox variant="danger" message="The report could not be loaded." /> : null}
      <Box variant="white" p="xl" style={{ overflowX: 'auto' }}>
        {loading && !data ? <Text>Loading…</Text> : null}
        {data?.rows && data.rows.length === 0 ? <Text data-testid="report-empty">No rows.</Text> : null}
        {data?.rows && data.rows.length > 0 ? (
          <Table data-testid="report-table">
            <TableHead>
              <TableRow>
                {data.columns?.map((column) => (
                  <TableCell key={column}>{column}</TableCell>
                ))}
              </TableRow>
            </TableHead>
            <TableBody>
              {data.rows.map((row, index) => (
                <TableRow key={index}>
                  {data.columns?.map((column) => (
                    <TableCell key={column}>{cell(row[column])}</TableCell>
                  ))}
                </TableRow>
              ))}
            </TableBody>
          </Table>
        ) : null}
        {data?.truncated ? <Text mt="default">Only the first rows are shown: choose a tenant.</Text> : null}
      </Box>
    </Box>
  );
};

export default Reports;
