package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// record is an ordered set of named fields: printed as "name: value"
// lines for people and as a JSON object for scripts.
type record struct {
	keys []string
	vals map[string]any
}

func newRecord() *record { return &record{vals: map[string]any{}} }

// add sets a field; a later add of the same name replaces the value.
func (r *record) add(name string, v any) *record {
	if _, ok := r.vals[name]; !ok {
		r.keys = append(r.keys, name)
	}
	r.vals[name] = v
	return r
}

// MarshalJSON keeps the fields in the order they were added.
func (r *record) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range r.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(r.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// write prints the record as aligned "name: value" lines.
func (r *record) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, k := range r.keys {
		switch v := r.vals[k].(type) {
		case []string:
			fmt.Fprintf(tw, "%s:\t%d\n", k, len(v))
			for _, s := range v {
				fmt.Fprintf(tw, "  \t%s\n", s)
			}
		default:
			fmt.Fprintf(tw, "%s:\t%v\n", k, v)
		}
	}
	return tw.Flush()
}
