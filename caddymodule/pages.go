package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// maxPageSize bounds a maintenance_page or pause_page file (1 MiB): the
// page is held in memory and written whole to every answer.
const maxPageSize = 1 << 20

// pages are an app's HTML answers for maintenance and for a pause's 503s,
// read when the config loads; nil where the app has none (the plain text
// answer stays).
type pages struct {
	maintenance []byte
	pause       []byte
}

// loadPages reads the pages of every app of the config, so that a page
// that cannot be read fails the config load, naming the app and the file.
func (a *App) loadPages() error {
	a.pages = map[string]pages{}
	for name, c := range a.Apps {
		if c == nil {
			continue
		}
		p, err := c.readPages()
		if err != nil {
			return fmt.Errorf("app %q: %w", name, err)
		}
		a.pages[name] = p
	}
	return nil
}

// readPages reads c's maintenance_page and pause_page, when set.
func (c *AppConfig) readPages() (pages, error) {
	var p pages
	var err error
	if c.MaintenancePage != "" {
		if p.maintenance, err = readPage("maintenance_page", c.MaintenancePage); err != nil {
			return pages{}, err
		}
	}
	if c.PausePage != "" {
		if p.pause, err = readPage("pause_page", c.PausePage); err != nil {
			return pages{}, err
		}
	}
	return p, nil
}

// readPage reads the page file path of setting: a regular, non-empty file
// of at most maxPageSize bytes.
func readPage(setting, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named below
		}
		return nil, fmt.Errorf("%s %q: cannot read it: %v", setting, path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %q: not a regular file", setting, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPageSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s %q: cannot read it: %v", setting, path, err)
	case len(b) > maxPageSize:
		return nil, fmt.Errorf("%s %q: larger than the limit of 1 MiB", setting, path)
	case len(b) == 0:
		return nil, fmt.Errorf("%s %q: the file is empty", setting, path)
	}
	return b, nil
}
