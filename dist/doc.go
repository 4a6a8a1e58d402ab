// Package dist holds the files of the production install guide (docs/install.md) and tests them.
package dist
