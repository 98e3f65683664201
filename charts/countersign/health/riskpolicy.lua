-- Argo CD health of a Countersign RiskPolicy (countersign.dev/v1alpha1: the risk matrix as data).
-- Read from the kstatus conditions the controller writes, the same ones `kubectl wait` and
-- Flux read: Stalled=True is Degraded, Reconciling=True is Progressing, Ready=True is Healthy,
-- and a status older than the spec (observedGeneration < generation) is Progressing.
local hs = {status = "Progressing", message = "Waiting for the Countersign controller"}
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the Countersign controller to observe generation " .. generation
  return hs
end
local ready, reconciling, stalled
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    elseif condition.type == "Reconciling" then
      reconciling = condition
    elseif condition.type == "Stalled" then
      stalled = condition
    end
  end
end
local function describe(condition)
  local reason = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    return reason .. ": " .. condition.message
  end
  return reason
end
if stalled ~= nil and stalled.status == "True" then
  return {status = "Degraded", message = describe(stalled)}
end
if reconciling ~= nil and reconciling.status == "True" then
  return {status = "Progressing", message = describe(reconciling)}
end
if ready == nil then
  return hs
end
if ready.status == "True" then
  return {status = "Healthy", message = describe(ready)}
end
-- Ready=False without Stalled or Reconciling: not there yet.
return {status = "Progressing", message = describe(ready)}
