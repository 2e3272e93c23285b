// Flex Consumption hosting plan (FC1): Linux, scales to zero, per-instance memory and the instance limit are
// set on the app itself (functionAppConfig.scaleAndConcurrency).

@description('Name of the plan.')
param name string

@description('Azure region (one that offers Flex Consumption).')
param location string

@description('Tags for the plan.')
param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    //checkov:skip=CKV_AZURE_225: Zone redundancy on Flex Consumption is offered in some regions only and needs zone-redundant storage; the importer tolerates a zone outage by retrying on the next timer run.
    reserved: true
  }
}

output id string = plan.id
output name string = plan.name
