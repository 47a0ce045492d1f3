package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gust-faas/gust/internal/server"
)

// config is what 'gust login' saves.
type config struct {
	Server string `json:"server"`
	Key    string `json:"key"`
}

// configPath is $GUST_CONFIG, or gust/config.json in the user's config
// directory ($XDG_CONFIG_HOME, or ~/.config).
func (e *env) configPath() (string, error) {
	if p := e.getenv("GUST_CONFIG"); p != "" {
		return p, nil
	}
	dir := e.getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := e.getenv("HOME")
		if home == "" {
			return "", errors.New("cannot find the config directory: HOME is not set (set GUST_CONFIG)")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "gust", "config.json"), nil
}

func (e *env) loadConfig() (config, error) {
	path, err := e.configPath()
	if err != nil {
		return config{}, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return config{}, nil
	}
	if err != nil {
		return config{}, err
	}
	var c config
	if err := json.Unmarshal(data, &c); err != nil {
		return config{}, fmt.Errorf("%s is not valid JSON (delete it and run 'gust login' again): %v", path, err)
	}
	return c, nil
}

func (e *env) saveConfig(c config) (string, error) {
	path, err := e.configPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	data, _ := json.MarshalIndent(c, "", "  ")
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return "", err
	}
	return path, os.Chmod(path, 0o600)
}

// localAdminKey reads the admin key a server on this machine wrote into
// $GUST_DATA_DIR or ./gust-data, if the user may read it.
func (e *env) localAdminKey() string {
	dir := firstOf(e.getenv("GUST_DATA_DIR"), "gust-data")
	data, err := os.ReadFile(filepath.Join(dir, server.AdminKeyFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}
