// Alerts an administrator acts on, all to one action group that e-mails alertEmail. None fires on a single failed
// attempt (a message is tried max_attempts times; one failed run of an account can be a passing outage). They query
// Application Insights (classic table names: traces) and rely on this telemetry contract of the app
// (ingest/telemetry.py; tests/infra/test_workbook.py checks every name a query uses exists there):
//   - a trace with customDimensions.event == movedToFailedEvent, .account, .message_ref and .reason for every
//     message moved to the failed folder;
//   - a trace per account run with customDimensions.event == accountResultEvent, .account, .failures_in_a_row
//     (failed runs in a row, from the state store) and .run_succeeded ('true', 'false', '' when skipped);
//   - one trace per run with customDimensions.event == runSummaryEvent.
// docs/OPERATIONS.md explains what each alert means and what to do.

@description('Prefix of the alert rule names.')
param namePrefix string

@description('Name of the action group.')
param actionGroupName string

@description('Azure region of the alert rules.')
param location string

@description('Tags for the alert resources.')
param tags object = {}

@description('Resource id of the Application Insights component the queries run on.')
param applicationInsightsId string

@description('Mailbox that receives the alerts; empty for none (the action group then has no e-mail receiver).')
param alertEmail string = ''

@description('Minutes between two scheduled runs (the timer schedules); no run summary within twice this fires the heartbeat alert.')
@minValue(1)
@maxValue(720)
param runIntervalMinutes int = 5

@description('Failed runs in a row of one account that fire the "account failing" alert.')
@minValue(1)
@maxValue(100)
param failingRunsInARow int = 3

@description('Hours without a successful run of an account that fire the "no successful run" alert (at most 47: the query looks back two days).')
@minValue(1)
@maxValue(47)
param noSuccessHours int = 24

@description('customDimensions.event of the trace written for each message moved to the failed folder.')
param movedToFailedEvent string = 'message_moved_to_failed'

@description('customDimensions.event of the trace written for each account run.')
param accountResultEvent string = 'account_result'

@description('customDimensions.event of the one summary trace per run.')
param runSummaryEvent string = 'run_summary'


var heartbeatMinutes = 2 * runIntervalMinutes
// A log alert's window is one of a fixed set of durations: take the smallest that covers the heartbeat period;
// the query itself looks back exactly heartbeatMinutes.
var heartbeatWindow = (heartbeatMinutes <= 10) ? 'PT10M' : ((heartbeatMinutes <= 30) ? 'PT30M' : ((heartbeatMinutes <= 60) ? 'PT1H' : ((heartbeatMinutes <= 360) ? 'PT6H' : 'P1D')))

var movedToFailedQuery = '''
traces
| where tostring(customDimensions.event) == '{0}'
| summarize moved = count() by account = tostring(customDimensions.account)
'''

// The latest result of each account says how many of its runs failed in a row (the state store counts them).
var failingInARowQuery = '''
traces
| where tostring(customDimensions.event) == '{0}'
| summarize arg_max(timestamp, customDimensions) by account = tostring(customDimensions.account)
| project account, failures_in_a_row = toint(customDimensions.failures_in_a_row)
'''

// Accounts that ran in the last two days but did not succeed in the last {1} hours (skipped runs do not count).
var noSuccessQuery = '''
traces
| where tostring(customDimensions.event) == '{0}'
| summarize last_success = maxif(timestamp, tostring(customDimensions.run_succeeded) == 'true')
    by account = tostring(customDimensions.account)
| where isnull(last_success) or last_success < ago({1}h)
| summarize stale = count() by account
'''

var heartbeatQuery = '''
traces
| where timestamp > ago({0}m)
| where tostring(customDimensions.event) == '{1}'
| summarize runs = count()
'''

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'doc2ingest'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'administrator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource movedToFailed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}moved-to-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'DOC² mail ingest: mail moved to the failed folder'
    description: 'A message failed max_attempts times (or cannot be read at all) and was moved to the failed folder. One alert per account. Look at it with `python -m ingest failed` or GET /api/accounts/{name}/failed; retry it once fixed. See docs/OPERATIONS.md, "Alerts".'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: format(movedToFailedQuery, movedToFailedEvent)
          timeAggregation: 'Total'
          metricMeasureColumn: 'moved'
          dimensions: [
            {
              name: 'account'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource accountFailing 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}account-failing'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'DOC² mail ingest: an account failed ${failingRunsInARow} runs in a row'
    description: 'The latest ${failingRunsInARow} or more runs of an account failed (sign-in refused, secret missing or expired, DOC² key rejected or DOC² down, messages failing). One alert per account. See docs/OPERATIONS.md, "Alerts".'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT6H'
    criteria: {
      allOf: [
        {
          query: format(failingInARowQuery, accountResultEvent)
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failures_in_a_row'
          dimensions: [
            {
              name: 'account'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThanOrEqual'
          threshold: failingRunsInARow
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource noSuccessfulRun 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}no-successful-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'DOC² mail ingest: an account without a successful run for ${noSuccessHours} hours'
    description: 'An account has run but not succeeded for ${noSuccessHours} hours: its mail waits. One alert per account. See `python -m ingest status` and docs/OPERATIONS.md, "Alerts".'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    criteria: {
      allOf: [
        {
          query: format(noSuccessQuery, accountResultEvent, noSuccessHours)
          timeAggregation: 'Total'
          metricMeasureColumn: 'stale'
          dimensions: [
            {
              name: 'account'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource noRecentRun 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}no-recent-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'DOC² mail ingest: no run within twice the schedule'
    description: 'No run summary was recorded in the last ${heartbeatMinutes} minutes (twice the timer interval): the app is stopped, failing to start, or its timers do not fire. See docs/DEPLOY.md, "Alerts".'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: heartbeatWindow
    criteria: {
      allOf: [
        {
          query: format(heartbeatQuery, heartbeatMinutes, runSummaryEvent)
          timeAggregation: 'Total'
          metricMeasureColumn: 'runs'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

output actionGroupId string = actionGroup.id
output alertRuleIds array = [
  movedToFailed.id
  accountFailing.id
  noSuccessfulRun.id
  noRecentRun.id
]
