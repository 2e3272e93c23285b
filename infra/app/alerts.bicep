// Alerts an administrator acts on, all to one action group that e-mails alertEmail. They query Application
// Insights (classic table names: traces, customMetrics) and rely on this telemetry contract of the app:
//   - a metric named messagesFailedMetric (counter of messages that failed in a run);
//   - one trace per run with customDimensions.event == runSummaryEvent and customDimensions.messages_failed;
//   - a trace with customDimensions.outcome == accountFailedOutcome and customDimensions.account for every
//     account that failed (bad password, expired secret, DOC² key rejected...).
// docs/DEPLOY.md explains what each alert means and what to do.

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

@description('customMetrics name of the failed-messages counter.')
param messagesFailedMetric string = 'messages_failed'

@description('customDimensions.event of the one summary trace per run.')
param runSummaryEvent string = 'run_summary'

@description('customDimensions.outcome of the trace written when an account fails.')
param accountFailedOutcome string = 'account_failed'

var heartbeatMinutes = 2 * runIntervalMinutes
// A log alert's window is one of a fixed set of durations: take the smallest that covers the heartbeat period;
// the query itself looks back exactly heartbeatMinutes.
var heartbeatWindow = (heartbeatMinutes <= 10) ? 'PT10M' : ((heartbeatMinutes <= 30) ? 'PT30M' : ((heartbeatMinutes <= 60) ? 'PT1H' : ((heartbeatMinutes <= 360) ? 'PT6H' : 'P1D')))

// Both sources give a real number: union would split a column of two types into failed_real and failed_long.
var failedMessagesQuery = '''
let fromMetric = customMetrics
    | where name == '{0}'
    | summarize failed = sum(valueSum);
let fromSummary = traces
    | where tostring(customDimensions.event) == '{1}'
    | summarize failed = sum(todouble(customDimensions.messages_failed));
union fromMetric, fromSummary
| summarize failed = max(failed)
| extend failed = coalesce(failed, 0.0)
'''

var accountFailedQuery = '''
traces
| where tostring(customDimensions.outcome) == '{0}'
| summarize failures = count() by account = tostring(customDimensions.account)
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

resource failedMessages 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}failed-messages'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'DOC² mail ingest: messages failed'
    description: 'At least one message could not be imported in the last 5 minutes (it stays in the mailbox or went to the failed folder). See docs/DEPLOY.md, "Alerts".'
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
          query: format(failedMessagesQuery, messagesFailedMetric, runSummaryEvent)
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failed'
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
    displayName: 'DOC² mail ingest: an account is failing'
    description: 'An account stopped with an error (sign-in refused, secret missing or expired, DOC² key rejected); its mail is untouched. One alert per account. See docs/DEPLOY.md, "Alerts".'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: format(accountFailedQuery, accountFailedOutcome)
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
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
  failedMessages.id
  accountFailing.id
  noRecentRun.id
]
