// Package guest holds the programs forkvm places inside its guests.
package guest

import _ "embed"

// Agent is the Python agent a template snapshots (agent.py).
//
//go:embed agent.py
var Agent []byte

// AgentPath is where the agent is placed in the guest's root directory.
const AgentPath = "/forkvm/agent.py"

// DefaultPreload is the agent's default list of modules to import before
// the snapshot.
var DefaultPreload = []string{"numpy", "json", "re", "math", "random", "collections", "itertools", "functools", "datetime", "hashlib"}
