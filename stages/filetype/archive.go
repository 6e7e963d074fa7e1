package filetype

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// memberHead is how much of a zip member is decompressed to tell its
// type: what mimetype looks at. A member's declared size is never trusted
// and never allocated: a bomb that inflates to terabytes costs 4 KiB.
const memberHead = 4096

// zip checks the members of a zip archive one level down (APPNOTE.TXT):
// each member's name against the extension lists, and, by its first
// decompressed bytes, its real type against the type lists and its name.
// An archive inside is checked as a file, not opened.
func (w *walker) zip(where string, data []byte) {
	// archive/zip reads the whole central directory into memory: a 25 MB
	// zip of empty members would be half a million records. The count
	// in the end record decides first.
	if n, ok := zipEntries(data); ok && n > uint64(w.f.maxMembers) {
		w.note("too-complex", "part %s: zip of %d members, more than max_archive_members %d", where, n, w.f.maxMembers)
		return
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	// ErrInsecurePath ("../x", "/etc/x") comes with a usable reader; the
	// names are only looked at here, never written to disk.
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		w.note("malformed", "part %s: zip: %v", where, err)
		return
	}
	files := zr.File
	if len(files) > w.f.maxMembers {
		w.note("too-complex", "part %s: zip of %d members, more than max_archive_members %d", where, len(files), w.f.maxMembers)
		files = files[:w.f.maxMembers]
	}
	head := make([]byte, memberHead)
	for _, f := range files {
		if w.ctx.Err() != nil {
			return
		}
		if strings.HasSuffix(f.Name, "/") {
			continue // a directory
		}
		at := fmt.Sprintf("%s member %q", where, f.Name)
		w.files++
		// APPNOTE.TXT 4.4.4: bit 0 of the flags, the member is encrypted.
		if f.Flags&0x1 != 0 {
			w.note("encrypted", "part %s: encrypted, content not checked", at)
			w.checkName(at, f.Name)
			continue
		}
		rc, err := f.Open()
		if err != nil {
			// An unknown compression method (LZMA, zstd, …): the name
			// is still checked.
			w.note("malformed", "part %s: %v", at, err)
			w.checkName(at, f.Name)
			continue
		}
		n, err := io.ReadFull(rc, head)
		rc.Close()
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			w.note("malformed", "part %s: %v", at, err)
		}
		w.check(at, f.Name, "", detect(head[:n]))
	}
}

// zipEntries reads the number of members from the end of central directory
// record (APPNOTE.TXT 4.3.16), or from the ZIP64 one (4.3.14) it points to
// through its locator (4.3.15); false when there is none to read.
func zipEntries(data []byte) (uint64, bool) {
	const eocdLen = 22
	from := max(0, len(data)-eocdLen-0xffff) // the comment is at most 64 KiB
	i := bytes.LastIndex(data[from:], []byte("PK\x05\x06"))
	if i < 0 || from+i+eocdLen > len(data) {
		return 0, false
	}
	i += from
	n := uint64(binary.LittleEndian.Uint16(data[i+10:]))
	if n != 0xffff || i < 20 || !bytes.HasPrefix(data[i-20:], []byte("PK\x06\x07")) {
		return n, true
	}
	off := binary.LittleEndian.Uint64(data[i-20+8:])
	if len(data) < 56 || off > uint64(len(data)-56) || !bytes.HasPrefix(data[off:], []byte("PK\x06\x06")) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(data[off+32:]), true
}

// rar checks the member names of a rar archive against the extension
// lists. The content is compressed with RAR's own methods, which no Go
// library in the standard library reads, so members are checked by name
// only; an archive whose headers are encrypted hides even the names and is
// reported encrypted.
func (w *walker) rar(where string, data []byte) {
	names, encrypted, err := rarNames(data, w.f.maxMembers+1)
	for i, name := range names {
		at := fmt.Sprintf("%s member %q", where, name)
		if i == w.f.maxMembers {
			w.note("too-complex", "part %s: rar of more than max_archive_members %d members", where, w.f.maxMembers)
			break
		}
		w.files++
		w.checkName(at, name)
	}
	if encrypted {
		w.note("encrypted", "part %s: rar with encrypted content or names, not checked", where)
	}
	if err != nil {
		w.note("malformed", "part %s: rar: %v", where, err)
	}
}

var (
	rar4Sig = []byte("Rar!\x1a\x07\x00")
	rar5Sig = []byte("Rar!\x1a\x07\x01\x00")
)

// rarNames reads the names of at most max members of a rar archive, and
// whether anything in it is encrypted.
func rarNames(data []byte, max int) (names []string, encrypted bool, err error) {
	switch {
	case bytes.HasPrefix(data, rar5Sig):
		return rar5Names(data[len(rar5Sig):], max)
	case bytes.HasPrefix(data, rar4Sig):
		return rar4Names(data[len(rar4Sig):], max)
	}
	return nil, false, errors.New("unknown rar version")
}

// rar4Names walks the blocks of a RAR 1.5–4.x archive (technote.txt of
// RAR 4): each block is HEAD_CRC(2) HEAD_TYPE(1) HEAD_FLAGS(2)
// HEAD_SIZE(2), then ADD_SIZE(4) when flag 0x8000 is set, and
// HEAD_SIZE+ADD_SIZE bytes in all.
func rar4Names(b []byte, max int) (names []string, encrypted bool, err error) {
	for len(b) >= 7 && len(names) < max {
		typ := b[2]
		flags := binary.LittleEndian.Uint16(b[3:])
		size := uint64(binary.LittleEndian.Uint16(b[5:]))
		if size < 7 || uint64(len(b)) < size {
			return names, encrypted, errors.New("truncated block")
		}
		add := uint64(0)
		switch typ {
		case 0x73: // MAIN_HEAD; 0x0080: the block headers are encrypted
			if flags&0x0080 != 0 {
				return names, true, nil
			}
		case 0x74: // FILE_HEAD
			// PACK_SIZE(4) UNP_SIZE(4) HOST_OS(1) FILE_CRC(4) FTIME(4)
			// UNP_VER(1) METHOD(1) NAME_SIZE(2) ATTR(4), then the high
			// halves of the sizes (8) when flag 0x100 is set, then the
			// name.
			if size < 32 {
				return names, encrypted, errors.New("short file header")
			}
			add = uint64(binary.LittleEndian.Uint32(b[7:]))
			off := uint64(32)
			if flags&0x100 != 0 {
				add |= uint64(binary.LittleEndian.Uint32(b[32:])) << 32
				off += 8
			}
			nameLen := uint64(binary.LittleEndian.Uint16(b[26:]))
			if off+nameLen > size {
				return names, encrypted, errors.New("file name beyond its header")
			}
			name := b[off : off+nameLen]
			// A Unicode name follows the ASCII one after a NUL (flag
			// 0x200); the ASCII one is what extensions are read from.
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if flags&0x04 != 0 {
				encrypted = true
			}
			if flags&0xe0 != 0xe0 { // 0xe0 in the window bits: a directory
				names = append(names, string(name))
			}
		default:
			if flags&0x8000 != 0 {
				if size < 11 {
					return names, encrypted, errors.New("short block")
				}
				add = uint64(binary.LittleEndian.Uint32(b[7:]))
			}
		}
		if typ == 0x7b { // ENDARC_HEAD
			return names, encrypted, nil
		}
		next := size + add
		if next > uint64(len(b)) {
			// The last member's data runs past what was sent: a
			// truncated archive. What was read stands.
			return names, encrypted, errors.New("truncated archive")
		}
		b = b[next:]
	}
	return names, encrypted, nil
}

// rar5Names walks the headers of a RAR 5 archive (rarlab.com technote for
// RAR 5.0): CRC32(4), header size (vint), then within that size the type,
// flags, optional extra area and data sizes, and the type's fields; the
// data area follows the header.
func rar5Names(b []byte, max int) (names []string, encrypted bool, err error) {
	for len(b) > 4 && len(names) < max {
		hsize, n := binary.Uvarint(b[4:])
		if n <= 0 || hsize == 0 || hsize > uint64(len(b)-4-n) {
			return names, encrypted, errors.New("truncated header")
		}
		h := b[4+n : 4+n+int(hsize)]
		rest := b[4+n+int(hsize):]
		typ, h, ok := vint(h)
		flags, h, ok2 := vint(h)
		if !ok || !ok2 {
			return names, encrypted, errors.New("bad header")
		}
		var extraSize, dataSize uint64
		if flags&0x01 != 0 {
			if extraSize, h, ok = vint(h); !ok {
				return names, encrypted, errors.New("bad header")
			}
		}
		if flags&0x02 != 0 {
			if dataSize, h, ok = vint(h); !ok {
				return names, encrypted, errors.New("bad header")
			}
		}
		switch typ {
		case 4: // archive encryption header: everything after it is encrypted
			return names, true, nil
		case 5: // end of archive
			return names, encrypted, nil
		case 2: // file header
			var fileFlags, nameLen uint64
			fields := h
			if fileFlags, fields, ok = vint(fields); !ok {
				return names, encrypted, errors.New("bad file header")
			}
			for range 2 { // unpacked size, attributes
				if _, fields, ok = vint(fields); !ok {
					return names, encrypted, errors.New("bad file header")
				}
			}
			skip := 0
			if fileFlags&0x02 != 0 { // mtime
				skip += 4
			}
			if fileFlags&0x04 != 0 { // data CRC32
				skip += 4
			}
			if len(fields) < skip {
				return names, encrypted, errors.New("bad file header")
			}
			fields = fields[skip:]
			for range 2 { // compression information, host OS
				if _, fields, ok = vint(fields); !ok {
					return names, encrypted, errors.New("bad file header")
				}
			}
			if nameLen, fields, ok = vint(fields); !ok || nameLen > uint64(len(fields)) {
				return names, encrypted, errors.New("bad file name")
			}
			name := string(fields[:nameLen])
			// The extra area ends the header; a record of type 1 is
			// file encryption.
			if extraSize > 0 && extraSize <= uint64(len(h)) && rar5Encrypted(h[uint64(len(h))-extraSize:]) {
				encrypted = true
			}
			if fileFlags&0x01 == 0 { // 0x01: a directory
				names = append(names, name)
			}
		}
		if dataSize > uint64(len(rest)) {
			return names, encrypted, errors.New("truncated archive")
		}
		b = rest[dataSize:]
	}
	return names, encrypted, nil
}

// rar5Encrypted reports whether an extra area holds a file encryption
// record: records are size (vint), type (vint), data.
func rar5Encrypted(extra []byte) bool {
	for len(extra) > 0 {
		size, rest, ok := vint(extra)
		if !ok || size == 0 || size > uint64(len(rest)) {
			return false
		}
		if typ, _, ok := vint(rest[:size]); ok && typ == 1 {
			return true
		}
		extra = rest[size:]
	}
	return false
}

// vint reads one RAR 5 variable-length integer: 7 bits a byte, low first,
// the high bit set on all bytes but the last.
func vint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, b, false
	}
	return v, b[n:], true
}
