//go:build !cachecrypt_next

package main

import "github.com/spf13/cobra"

// addTransferCommands adds export and import once package export lands.
func (a *app) addTransferCommands(root *cobra.Command) {}
