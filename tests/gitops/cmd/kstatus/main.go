// Command kstatus computes the kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) of every
// object it reads — the library behind Flux's `wait: true`, `kubectl wait`-style waits in
// kpt and cli-utils' appliers — so the tests can prove Countersign's status fixtures read the
// way GitOps tools read them.
//
// Input on stdin: a JSON array of objects. Output on stdout: a JSON array with one
// {"status": ..., "message": ...} per object, in order. An object kstatus cannot compute
// is reported with status "Error" and the error as message.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: cannot read stdin:", err)
		os.Exit(2)
	}
	// Kubernetes' own decoder: whole numbers become int64, as in objects read from the API.
	var objects []map[string]interface{}
	if err := k8sjson.Unmarshal(input, &objects); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin is not a JSON array of objects:", err)
		os.Exit(2)
	}
	results := make([]result, 0, len(objects))
	for _, object := range objects {
		res, err := status.Compute(&unstructured.Unstructured{Object: object})
		if err != nil {
			results = append(results, result{Status: "Error", Message: err.Error()})
			continue
		}
		results = append(results, result{Status: res.Status.String(), Message: res.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: cannot write the results:", err)
		os.Exit(2)
	}
}
