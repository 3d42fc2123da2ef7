package agent

import (
	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

// Authorizer is the agent API's table: every method is the provisioner's,
// and only the provisioner's. A node plugin, the controller, an
// administrator or another storage node driving an agent is refused
// (PermissionDenied), so one compromised machine cannot allow a host,
// hand out secrets or delete replicas on the storage nodes.
func Authorizer() rpcauth.Authorizer {
	p := rpcauth.Policy{}
	rule := rpcauth.Rule{Roles: []rpcauth.Role{rpcauth.RoleProvisioner}}
	for _, m := range agentapi.Target_ServiceDesc.Methods {
		p["/"+agentapi.Target_ServiceDesc.ServiceName+"/"+m.MethodName] = rule
	}
	// The streaming calls (ReadData, WriteData) move snapshot data.
	for _, st := range agentapi.Target_ServiceDesc.Streams {
		p["/"+agentapi.Target_ServiceDesc.ServiceName+"/"+st.StreamName] = rule
	}
	return p
}
