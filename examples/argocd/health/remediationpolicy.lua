-- ArgoCD health check for vigil.dev/RemediationPolicy (argocd-cm:
-- resource.customizations.health.vigil.dev_RemediationPolicy). Lua 5.1, as ArgoCD runs it.
--   no status yet, stale status  -> Progressing
--   Ready=False                  -> Degraded (invalid spec, no detectors)
--   phase Paused                 -> Suspended
--   otherwise                    -> Healthy (cooldowns and rate limits are guard rails working)
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

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Vigil operator to reconcile the policy"
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
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

if obj.status.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "spec.paused is true"
  return hs
end

hs.status = "Healthy"
if obj.status.phase ~= nil then
  hs.message = "Phase " .. obj.status.phase
else
  hs.message = "Ready"
end
return hs
