// Command luahealth runs an Argo CD resource health script (health.lua) in gopher-lua, the
// Lua VM Argo CD embeds, the way Argo CD runs it: a fresh state with only the base, table,
// string and math libraries, the resource as the global `obj`, and the returned table read
// as {status, message}.
//
// Usage: luahealth SCRIPT < objects.json
// Input on stdin: a JSON array of objects. Output on stdout: a JSON array with one
// {"status": ..., "message": ...} per object, in order. A script error is reported with
// status "Error" and the error as message.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: luahealth SCRIPT < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "luahealth: cannot read the script:", err)
		os.Exit(2)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "luahealth: cannot read stdin:", err)
		os.Exit(2)
	}
	var objects []interface{}
	if err := json.Unmarshal(input, &objects); err != nil {
		fmt.Fprintln(os.Stderr, "luahealth: stdin is not a JSON array of objects:", err)
		os.Exit(2)
	}
	results := make([]result, 0, len(objects))
	for _, object := range objects {
		results = append(results, run(string(script), object))
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "luahealth: cannot write the results:", err)
		os.Exit(2)
	}
}

// run evaluates the script for one object like Argo CD's util/lua VM: SkipOpenLibs plus
// the safe libraries, `obj` set, the script's return value as the health.
func run(script string, object interface{}) result {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		state.Push(state.NewFunction(lib.open))
		state.Push(lua.LString(lib.name))
		state.Call(1, 0)
	}
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(script); err != nil {
		return result{Status: "Error", Message: err.Error()}
	}
	returned := state.Get(-1)
	table, ok := returned.(*lua.LTable)
	if !ok {
		return result{Status: "Error", Message: fmt.Sprintf("the script returned %s, not a table", returned.Type())}
	}
	status, _ := table.RawGetString("status").(lua.LString)
	message, _ := table.RawGetString("message").(lua.LString)
	return result{Status: string(status), Message: string(message)}
}

// toLua converts decoded JSON into Lua values as Argo CD's decodeValue does: objects and
// arrays become tables (arrays 1-indexed), numbers LNumber, null nil.
func toLua(state *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		table := state.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	case []interface{}:
		table := state.NewTable()
		for i, item := range v {
			table.RawSetInt(i+1, toLua(state, item))
		}
		return table
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	case nil:
		return lua.LNil
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
