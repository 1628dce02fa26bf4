// What an admin watches: the licshift workbook, an action group and one log alert per alert-worthy
// event kind. Queries read Application Insights `traces`: licshift logs every event on the
// "licshift" logger with its attributes (licshift_kind, licshift_wave_id, ...) in customDimensions
// (host.json telemetryMode OpenTelemetry; see src/licshift/services/telemetry.py for the kinds).
param location string
param tags object = {}
param appInsightsName string
param actionGroupName string
param alertNamePrefix string

@description('E-mail address that receives the alerts. Empty: the action group has no receivers.')
param alertEmail string = ''

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'licshift-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'licshift'
    category: 'workbook'
    sourceId: appInsights.id
    version: '1.0'
    serializedData: replace(loadTextContent('workbook.json'), '__APP_INSIGHTS_ID__', appInsights.id)
  }
}

var adminReceivers = [
  {
    name: 'licshift-admin'
    emailAddress: alertEmail
    useCommonAlertSchema: true
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'licshift'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : adminReceivers
  }
}

// One rule per event kind; severity 0 is the most severe.
var alertRules = [
  {
    name: 'restored'
    severity: 1
    title: 'licshift: a user was restored after a removal'
    description: 'A post-removal check found a lost license or service plan; licshift put the direct assignment back and halted the wave. Read licshift status <wave>.'
    query: 'traces | where tostring(customDimensions.licshift_kind) == "restored" | project timestamp, message, wave_id = tostring(customDimensions.licshift_wave_id), user_id = tostring(customDimensions.licshift_user_id)'
  }
  {
    name: 'settle-loss'
    severity: 1
    title: 'licshift: a migrated user lost a plan after a relied-on group changed'
    description: 'Within LICSHIFT_SETTLE_HOURS of a removal, a group the removal relied on changed and the user lost a plan; LICSHIFT_SETTLE_ACTION=alert-only left it as is. Restore or fix the group.'
    query: 'traces | where tostring(customDimensions.licshift_kind) == "settle-loss" | project timestamp, message, wave_id = tostring(customDimensions.licshift_wave_id), user_id = tostring(customDimensions.licshift_user_id)'
  }
  {
    name: 'wave-halted'
    severity: 1
    title: 'licshift: a wave halted'
    description: 'A wave stopped on its own (restore, failure threshold, group gone). Read the event with licshift status <wave>, fix the cause, then start a new wave or roll back.'
    query: 'traces | where tostring(customDimensions.licshift_kind) == "wave-halted" | project timestamp, message, wave_id = tostring(customDimensions.licshift_wave_id)'
  }
  {
    name: 'processing-timeout'
    severity: 2
    title: 'licshift: group license processing did not finish in time'
    description: 'The group\'s license processing did not complete within LICSHIFT_PROCESSING_TIMEOUT_MINUTES; the wave halted before removing anything more.'
    query: 'traces | where tostring(customDimensions.licshift_kind) == "processing-timeout" | project timestamp, message, wave_id = tostring(customDimensions.licshift_wave_id)'
  }
  {
    name: 'poison-message'
    severity: 2
    title: 'licshift: a message went to a poison queue'
    description: 'A wave command or removal task failed maxDequeueCount times; licshift reconciled what it could and recorded it.'
    query: 'traces | where tostring(customDimensions.licshift_kind) == "poison-message" | project timestamp, message, wave_id = tostring(customDimensions.licshift_wave_id), user_id = tostring(customDimensions.licshift_user_id)'
  }
  {
    name: 'removal-failed'
    severity: 2
    title: 'licshift: Graph refused a removal'
    description: 'A removal failed (not throttling); the direct assignment is still in place. Enough failures halt the wave (LICSHIFT_FAILURE_HALT_THRESHOLD).'
    query: 'traces | where tostring(customDimensions.licshift_kind) == "removal-failed" | project timestamp, message, wave_id = tostring(customDimensions.licshift_wave_id), user_id = tostring(customDimensions.licshift_user_id)'
  }
  {
    name: 'drift'
    severity: 3
    title: 'licshift: a migrated user has a direct assignment again'
    description: 'Something (a legacy licensing script?) re-added a direct assignment licshift removed. Fix the script, then run a new wave on the group.'
    query: 'traces | where tostring(customDimensions.licshift_kind) == "drift" | project timestamp, message, wave_id = tostring(customDimensions.licshift_wave_id), user_id = tostring(customDimensions.licshift_user_id)'
  }
  {
    name: 'drift-remove-held'
    severity: 2
    title: 'licshift: a direct license keeps coming back after follow-up waves'
    description: 'LICSHIFT_DRIFT_REMOVE removed it again LICSHIFT_DRIFT_REMOVE_MAX_REPEATS times and it came back each time; licshift stopped removing it. Fix the script that re-adds it, then start a wave.'
    query: 'traces | where tostring(customDimensions.licshift_kind) == "drift-remove-held" | project timestamp, message, wave_id = tostring(customDimensions.licshift_wave_id), user_id = tostring(customDimensions.licshift_user_id)'
  }
]

resource alerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in alertRules: {
    name: '${alertNamePrefix}${rule.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.title
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [
        appInsights.id
      ]
      evaluationFrequency: 'PT5M'
      // Overlapping windows tolerate ingestion delay; a stateful alert (autoMitigate) still notifies once.
      windowSize: 'PT15M'
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Count'
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
      // traces may hold no licshift record yet on a fresh deployment.
      skipQueryValidation: true
      actions: {
        actionGroups: [
          actionGroup.id
        ]
      }
    }
  }
]

output workbookId string = workbook.id
output actionGroupId string = actionGroup.id
