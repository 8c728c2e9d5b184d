/**
 * The Crontab page: each scheduled task with its schedule, last and next run
 * (admin/pages/crontab.ts reads them). Times are ISO 8601 in UTC, the
 * schedule's own time zone, with how long ago or how soon beside them.
 */
import React, { useEffect, useState } from 'react';
import { Box, H2, MessageBox, Table, TableBody, TableCell, TableHead, TableRow, Text } from '@adminjs/design-system';
import { ApiClient } from 'adminjs';

interface CrontabTask {
  identifier: string;
  task: string;
  schedule: string;
  options: string;
  description: string;
  knownSince: string | null;
  lastRun: string | null;
  nextRun: string | null;
}

interface CrontabPageData {
  now?: string;
  tasks?: CrontabTask[];
  error?: { code: string; message: string };
}

const api = new ApiClient();

/** "in 3 min", "42 s ago", "2 h 5 min ago": relative to the server's time. */
export function relative(at: string, now: string): string {
  const seconds = Math.round((Date.parse(at) - Date.parse(now)) / 1000);
  const abs = Math.abs(seconds);
  let text: string;
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86_400) text = `${Math.floor(abs / 3600)} h ${Math.round((abs % 3600) / 60)} min`;
  else text = `${Math.floor(abs / 86_400)} d ${Math.round((abs % 86_400) / 3600)} h`;
  return seconds >= 0 ? `in ${text}` : `${text} ago`;
}

/** 2026-12-05 14:03:00 UTC */
function utc(at: string): string {
  return `${at.slice(0, 10)} ${at.slice(11, 19)} UTC`;
}

const When: React.FC<{ at: string | null; now: string; never: string; testId: string }> = ({ at, now, never, testId }) =>
  at ? (
    <span data-testid={testId} title={at} style={{ whiteSpace: 'nowrap' }}>
      {utc(at)}
      <br />
      <Text as="span" color="grey60">
        {relative(at, now)}
      </Text>
    </span>
  ) : (
    <Text as="span" color="grey60" data-testid={testId}>
      {never}
    </Text>
  );

const Crontab: React.FC = () => {
  const [data, setData] = useState<CrontabPageData | null>(null);
  const [failed, setFailed] = useState(false);

  useEffect(() => {
    api
      .getPage({ pageName: 'crontab' })
      .then((response) => setData(response.data as CrontabPageData))
      .catch(() => setFailed(true));
  }, []);

  if (failed || data?.error) {
    return (
      <Box variant="white" p="xl" data-testid="crontab-page">
        <MessageBox variant="danger" message={data?.error ? `${data.error.code}: ${data.error.message}` : 'The crontab could not be loaded.'} />
      </Box>
    );
  }
  return (
    <Box variant="grey" data-testid="crontab-page">
      <Box variant="white" p="xl">
        <H2>Crontab</H2>
        <Text color="grey60" mb="lg">
          The worker's scheduled tasks (jobs/crontab). Schedules are in UTC; last run is when Graphile Worker last queued the task.
        </Text>
        {!data ? <Text>Loading…</Text> : null}
        {data?.tasks && data.now ? (
          <Table data-testid="crontab-table">
            <TableHead>
              <TableRow>
                <TableCell>Task</TableCell>
                <TableCell>Schedule</TableCell>
                <TableCell>Last run</TableCell>
                <TableCell>Next run</TableCell>
                <TableCell>What it does</TableCell>
              </TableRow>
            </TableHead>
            <TableBody>
              {data.tasks.map((task) => (
                <TableRow key={task.identifier} data-testid={`crontab-${task.identifier}`}>
                  <TableCell style={{ minWidth: 240 }}>
                    <strong>{task.task}</strong>
                    {task.options ? (
                      <Text as="div" color="grey60" fontSize="sm" style={{ wordBreak: 'break-all' }}>
                        {task.options}
                      </Text>
                    ) : null}
                  </TableCell>
                  <TableCell>
                    <span data-testid="crontab-schedule" style={{ whiteSpace: 'pre', fontFamily: 'monospace' }}>
                      {task.schedule}
                    </span>
                  </TableCell>
                  <TableCell>
                    <When at={task.lastRun} now={data.now!} never="not run yet" testId="crontab-last" />
                  </TableCell>
                  <TableCell>
                    <When at={task.nextRun} now={data.now!} never="never (no such date)" testId="crontab-next" />
                  </TableCell>
                  <TableCell>{task.description}</TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        ) : null}
      </Box>
    </Box>
  );
};

export default Crontab;
