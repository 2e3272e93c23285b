// The operator's Azure Monitor workbook on Application Insights: runs per account over time, documents per day,
// mail moved to the failed folder with the reason, DOC² latency and errors, and the accounts whose last successful
// run is older than three schedule periods. Its queries (workbook.json) read the telemetry of ingest/telemetry.py;
// tests/infra/test_workbook.py checks every event, dimension and metric they name exists there.

@description('Azure region of the workbook.')
param location string

@description('Tags for the workbook.')
param tags object = {}

@description('Resource id of the Application Insights component the queries run on.')
param applicationInsightsId string

@description('Minutes between two scheduled runs: an account is stale when its last successful run is older than three.')
@minValue(1)
@maxValue(720)
param runIntervalMinutes int = 5

@description('Name shown in the portal.')
param displayName string = 'DOC² mail ingest'

var template = replace(loadTextContent('workbook.json'), '__APPLICATION_INSIGHTS_ID__', applicationInsightsId)
var content = replace(template, '__SCHEDULE_MINUTES__', string(runIntervalMinutes))

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsId, 'doc2-mail-ingest-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: content
  }
}

output workbookId string = workbook.id
