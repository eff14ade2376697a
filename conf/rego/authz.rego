# The policy of conf/rego.yaml, in Rego v1 (OPA 1.0's syntax). The input document is described
# in the README ("Rego policies"); `data` is rego/data.json.
package gateway.authz

default allow := false

# The health check is public.
allow if input.path == "/health"

# /admin/... needs the admin role.
allow if {
	input.segments[0] == "admin"
	"admin" in input.identity.roles
}

# /tenants/<t>/... only for callers of tenant t.
allow if {
	input.segments[0] == "tenants"
	input.segments[1] == input.identity.tenant
}

# /orders/...: every scope the method needs (from data) is held.
allow if {
	input.segments[0] == "orders"
	needed := data.scopes[input.method]
	every scope in needed {
		scope in input.identity.scopes
	}
}
