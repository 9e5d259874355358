{{- define "agentspec.name" -}}agentspec-operator{{- end -}}

{{- define "agentspec.labels" -}}
app.kubernetes.io/name: agentspec-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "agentspec.selector" -}}
app.kubernetes.io/name: agentspec-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agentspec.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Rules on namespaced objects: cluster-wide in a ClusterRole, or per watched namespace. */}}
{{- define "agentspec.namespacedRules" -}}
- apiGroups: [agentspec.io]
  resources: [agentspecs, prompttemplates, mcpservers]
  verbs: [get, list, watch]
- apiGroups: [agentspec.io]
  resources: [agentspecs/status, prompttemplates/status, mcpservers/status]
  verbs: [get, patch, update]
- apiGroups: [""]
  resources: [configmaps, services, serviceaccounts]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, watch, create, update, patch, delete]
# What it grants agents it must hold itself (RBAC forbids escalation): their own ConfigMap
# and Secrets by name (get/list/watch), tokens of their own ServiceAccount (workload identity
# between agents), and Events.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [serviceaccounts/token]
  verbs: [create]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
