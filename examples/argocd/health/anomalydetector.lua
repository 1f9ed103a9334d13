-- ArgoCD health check for vigil.dev/AnomalyDetector (argocd-cm:
-- resource.customizations.health.vigil.dev_AnomalyDetector). Lua 5.1, as ArgoCD runs it.
--   no status yet, stale status, Ready=Unknown  -> Progressing
--   Ready=True and Degraded=True                -> Degraded (Prometheus failing, last verdict kept)
--   Ready=True                                  -> Healthy (an anomaly is not ill health)
--   Ready=False reason Paused                   -> Suspended
--   Ready=False otherwise                       -> Degraded (invalid spec, query or model)
local hs = {}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Vigil operator to evaluate the detector"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find(obj.status.conditions, "Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = ready and describe(ready) or "Ready condition not reported yet"
  return hs
end

if ready.status == "True" then
  local degraded = find(obj.status.conditions, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(degraded)
    return hs
  end
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

if ready.reason == "Paused" then
  hs.status = "Suspended"
else
  hs.status = "Degraded"
end
hs.message = describe(ready)
return hs
