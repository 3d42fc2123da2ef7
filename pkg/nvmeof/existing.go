package nvmeof

import "errors"

// ReadExisting reads every named kernel object, skipping those that vanish
// between listing and reading them (ErrNotFound): sysfs and configfs change
// under us, and a listing is only a snapshot.
func ReadExisting[K any, T any](keys []K, read func(K) (T, error)) ([]T, error) {
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		v, err := read(k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
