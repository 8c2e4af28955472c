// hvmm arm64 head: Linux Image header that is also a PE/COFF header, the
// MMU-off boot path (boot tables, identity map, MMU on), the secondary CPU
// entry, the exception vectors and the exit path.
//
// Assembled through `global_asm!` in aarch64.rs, which substitutes the
// constants named in braces (so braces appear nowhere else in this file).
//
// Registers kept through the primary head (MMU off, no stack):
//   x19  DTB physical address (x0 at entry)
//   x20  physical address of _start (the load address)
//   x21  CPU index (0 on the primary; the PSCI context id on secondaries)
//   x25  physical address of boot_fixmap_l3

// A PC-relative address: the physical address while the MMU is off, the
// virtual address once running at the link address.
.macro adr_l reg, sym
    adrp \reg, \sym
    add \reg, \reg, :lo12:\sym
.endm

// Descriptor bits (see hvmm::Pte): valid | page, AttrIndx 7 (Normal WB),
// AP[1], SH inner, AF  ->  0x75f.  AP[2] (read-only) 0x80.  XN bit 54.
.equ PTE_NORMAL_PAGE, 0x75f
.equ PTE_RO, 0x80
.equ PTE_TABLE, 3

// ---------------------------------------------------------------------------
// Offset 0: the header.
    .section .text.header, "ax"
    .global _start
_start:
    add x13, x18, #0x16             // the bytes "MZ": a PE/COFF (EFI) image too
    b primary_entry                 // Linux Image: code0/code1
    .quad 0                         // text_offset: any 4 KiB-aligned address
    .quad _image_size               // effective image size, BSS included
    .quad 0xa                       // flags: little endian, 4 KiB pages, anywhere in RAM
    .quad 0                         // res2
    .quad 0                         // res3
    .quad 0                         // res4
    .ascii "ARM\x64"                // magic
    .long pe_header - _start        // offset of the PE header

pe_header:                          // offset 0x40
    .ascii "PE"
    .short 0
    .short 0xaa64                   // Machine: ARM64
    .short 1                        // NumberOfSections
    .long 0                         // TimeDateStamp
    .long 0                         // PointerToSymbolTable
    .long 0                         // NumberOfSymbols
    .short section_table - optional_header  // SizeOfOptionalHeader
    .short 0x0206                   // Characteristics: executable image,
                                    // line numbers and debug info stripped
optional_header:
    .short 0x20b                    // PE32+
    .byte 0x01, 0x00                // linker version
    .long _pe_text_rawsize          // SizeOfCode
    .long 0                         // SizeOfInitializedData
    .long 0                         // SizeOfUninitializedData
    .long _pe_entry                 // AddressOfEntryPoint: efi_stub
    .long 0x1000                    // BaseOfCode
    .quad 0                         // ImageBase
    .long 0x1000                    // SectionAlignment
    .long 0x1000                    // FileAlignment
    .short 0, 0                     // OS version
    .short 0, 0                     // image version
    .short 0, 0                     // subsystem version
    .long 0                         // Win32VersionValue
    .long _pe_image_size            // SizeOfImage
    .long 0x1000                    // SizeOfHeaders
    .long 0                         // CheckSum
    .short 10                       // Subsystem: EFI application
    .short 0                        // DllCharacteristics
    .quad 0                         // SizeOfStackReserve
    .quad 0                         // SizeOfStackCommit
    .quad 0                         // SizeOfHeapReserve
    .quad 0                         // SizeOfHeapCommit
    .long 0                         // LoaderFlags
    .long 6                         // NumberOfRvaAndSizes
    .quad 0                         // export table
    .quad 0                         // import table
    .quad 0                         // resource table
    .quad 0                         // exception table
    .quad 0                         // certificate table
    .quad 0                         // base relocation table
section_table:
    .ascii ".text"
    .byte 0, 0, 0
    .long _pe_text_vsize            // VirtualSize
    .long 0x1000                    // VirtualAddress
    .long _pe_text_rawsize          // SizeOfRawData
    .long 0x1000                    // PointerToRawData
    .long 0                         // PointerToRelocations
    .long 0                         // PointerToLinenumbers
    .short 0                        // NumberOfRelocations
    .short 0                        // NumberOfLinenumbers
    .long 0xe0000060                // code, initialised data, execute, read, write

// The MMU-enable code, in the image's first page (the linker checks). The
// head identity-maps the page it runs from, this one or the image's last
// page, which receives a copy of these four instructions (see
// build_boot_tables). x0 = SCTLR_EL2, x1 = where to continue (a link address).
    .balign 16
enable_mmu_code:
    dsb sy
    msr sctlr_el2, x0
    isb
    br x1

// ---------------------------------------------------------------------------
// The primary CPU, MMU off, at the load address.
    .section .text.head, "ax"
primary_entry:
    mov x19, x0                     // DTB
    mov x21, #0                     // CPU 0
    mrs x0, CurrentEL
    cmp x0, #(2 << 2)
    b.eq 1f
    adr_l x0, msg_not_el2
    bl early_puts
    mrs x0, CurrentEL
    lsr x0, x0, #2
    bl early_puthex
    adr_l x0, msg_close
    bl early_puts
    mov x0, #{EXIT_WRONG_MODE}
    b hvmm_exit
1:  msr daifset, #0xf
    adr_l x0, hvmm_vectors          // early vectors, at their physical address
    msr vbar_el2, x0
    mov x0, #{CPTR}                 // FP/SIMD not trapped: Rust may use it
    msr cptr_el2, x0
    isb
    adr_l x20, _start
    adr_l x25, boot_fixmap_l3
    bl build_boot_tables
    bl cpu_init
    ldr x1, =primary_switched
    b enable_mmu

// Builds the boot tables at their physical addresses: the image at its link
// address with 4 KiB pages (text and init RX, rodata RO, the rest RW, XN),
// exactly the image, one L3 table per 2 MiB; and a one-page identity map of
// the page the MMU is turned on from. That page is the image's first, or,
// when the image is loaded less than its size above its link address (the
// first page's VA would then be a page of the image), its last, which gets
// a copy of enable_mmu_code. The identity map follows the image's tables as
// long as its walk shares them and uses tables of its own below. Records in
// boot_idmap: the link VA of the first entry written for it (0: none, the
// image runs at its link address) and that entry's value, and the physical
// address of the MMU-enable code.
build_boot_tables:
    adr_l x0, __pgtables_start
    adr_l x1, __pgtables_end
0:  stp xzr, xzr, [x0], #16
    cmp x0, x1
    b.lo 0b

    // L0[0] -> L1, L1[0] -> L2, L2[1..] -> one L3 per 2 MiB of the image.
    adr_l x0, boot_l0
    adr_l x1, boot_l1
    orr x1, x1, #PTE_TABLE
    str x1, [x0]
    adr_l x0, boot_l1
    adr_l x1, boot_l2
    orr x1, x1, #PTE_TABLE
    str x1, [x0]
    adr_l x0, boot_l2
    adr_l x1, boot_l3
    ldr x2, =_start
    ldr x3, =_end
    ubfx x4, x2, #21, #9
7:  orr x5, x1, #PTE_TABLE
    str x5, [x0, x4, lsl #3]
    add x1, x1, #4096
    add x4, x4, #1
    add x2, x2, #0x200000
    cmp x2, x3
    b.lo 7b

    adr_l x0, boot_l3               // the L3 tables are consecutive pages
    mov x1, x20                     // PA
    ldr x2, =_start                 // VA
    ldr x3, =_end
    ldr x4, =_etext
    ldr x5, =_erodata
    ldr x9, =__init_end
    mov x6, #PTE_NORMAL_PAGE
    mov x10, #0                     // page index from _start
1:  orr x7, x1, x6
    cmp x2, x4
    b.lo 2f
    cmp x2, x5
    b.lo 4f
    cmp x2, x9
    b.lo 2f
    orr x7, x7, #(1 << 54)          // data, BSS, tables: RW, execute-never
    b 3f
4:  orr x7, x7, #(1 << 54)          // rodata: read-only, execute-never
2:  orr x7, x7, #PTE_RO             // text and init: read-only, executable
3:  str x7, [x0, x10, lsl #3]
    add x10, x10, #1
    add x1, x1, #4096
    add x2, x2, #4096
    cmp x2, x3
    b.lo 1b

    // The page the MMU is turned on from: x9 its PA (= its identity VA),
    // x15 the PA of the code in it.
    ldr x8, =_start
    sub x2, x20, x8                 // load - link
    ldr x3, =_image_size
    adr_l x15, enable_mmu_code
    and x9, x15, #~0xfff
    mov x12, #0                     // link VA of the first entry written
    mov x13, #0                     // its value
    cbz x2, 50f                     // at the link address: no identity map
    cmp x2, x3
    b.hs 5f
    add x9, x20, x3                 // the last page
    sub x9, x9, #4096
    adr_l x4, enable_mmu_code
    ldp x5, x6, [x4]
    stp x5, x6, [x9]
    dc ivac, x9                     // no stale line over the copy
    dsb sy
    mov x15, x9

5:  mov x11, #(PTE_NORMAL_PAGE | PTE_RO)
    orr x11, x11, x9                // the RX page descriptor for it
    adr_l x0, boot_l0               // the table walked (PA)
    adr_l x14, boot_id_l1           // the fresh table for the next level
    mov x3, #39                     // this level's VA shift
    ldr x8, =_start
    ldr x16, =0x0000fffffffff000    // next-level table address bits
10: lsr x4, x9, x3
    and x4, x4, #0x1ff
    add x5, x0, x4, lsl #3          // the entry (PA)
    cmp x3, #12
    b.eq 30f
    ldr x6, [x5]
    tbz x6, #0, 20f
    and x0, x6, x16                 // shared with the image: descend
    b 25f
20: orr x7, x14, #PTE_TABLE         // a table of its own
    str x7, [x5]
    mov x0, x14
    cbnz x12, 25f
    sub x12, x5, x20
    add x12, x12, x8
    mov x13, x7
25: add x14, x14, #4096
    sub x3, x3, #9
    b 10b
30: str x11, [x5]                   // level 3: the page (never an image page)
    cbnz x12, 50f
    sub x12, x5, x20
    add x12, x12, x8
    mov x13, x11

50: adr_l x0, boot_idmap
    stp x12, x13, [x0]
    str x15, [x0, #16]

    // The tables were written with the MMU off (non-cacheable): drop any
    // stale cache line over them before the cacheable walker reads them.
    dsb sy
    adr_l x0, __pgtables_start
    adr_l x1, __pgtables_end
    mrs x2, ctr_el0
    ubfx x2, x2, #16, #4
    mov x3, #4
    lsl x3, x3, x2                  // D-cache line size
6:  dc ivac, x0
    add x0, x0, x3
    cmp x0, x1
    b.lo 6b
    dsb sy
    ret

// MAIR, TCR, TTBR0 for the boot tables; local TLB and I-cache invalidated.
cpu_init:
    ldr x0, ={MAIR}
    msr mair_el2, x0
    mrs x1, id_aa64mmfr0_el1
    and x1, x1, #0xf                // PARange
    mov x2, #5
    cmp x1, x2
    csel x1, x1, x2, ls             // at most 48 bits
    ldr x0, ={TCR}
    orr x0, x0, x1, lsl #16         // PS
    msr tcr_el2, x0
    adr_l x0, boot_l0
    msr ttbr0_el2, x0
    isb
    tlbi alle2
    ic iallu
    dsb sy
    isb
    ret

// A secondary CPU, started by PSCI CPU_ON with x0 = its index, MMU off.
    .global secondary_entry
secondary_entry:
    mov x21, x0
    mrs x0, CurrentEL
    cmp x0, #(2 << 2)
    b.eq 1f
    adr_l x0, msg_not_el2
    bl early_puts
    mov x0, #{EXIT_WRONG_MODE}
    b hvmm_exit
1:  msr daifset, #0xf
    adr_l x0, hvmm_vectors
    msr vbar_el2, x0
    mov x0, #{CPTR}
    msr cptr_el2, x0
    isb
    cmp x21, #{MAX_CPUS}
    b.lo 2f
    adr_l x0, msg_too_many
    bl early_puts
    mov x0, #{EXIT_SMP}
    b hvmm_exit
2:  bl cpu_init
    ldr x1, =secondary_switched
    b enable_mmu

// Turns the MMU on (boot tables loaded by cpu_init) through the identity-
// mapped MMU-enable code the head chose. x1 = where to continue, a link
// address. MMU off.
enable_mmu:
    adr_l x2, boot_idmap
    ldr x2, [x2, #16]
    ldr x0, ={SCTLR}
    br x2

// Early console: the PL011 at its physical address (MMU off only).
early_putc:                         // w0: the character; clobbers x15, x16
    movz x15, #0x0900, lsl #16
1:  ldr w16, [x15, #0x18]
    tbnz w16, #5, 1b                // TXFF
    strb w0, [x15]
    ret

early_puts:                         // x0: NUL-terminated string; clobbers x0, x14-x17
    mov x17, x30
    mov x14, x0
1:  ldrb w0, [x14], #1
    cbz w0, 2f
    bl early_putc
    b 1b
2:  ret x17

early_puthex:                       // x0: the value; clobbers x0, x13-x17
    mov x17, x30
    mov x13, x0
    mov w0, #0x30                   // '0'
    bl early_putc
    mov w0, #0x78                   // 'x'
    bl early_putc
    mov x14, #60
1:  lsr x0, x13, x14
    and x0, x0, #0xf
    cmp x0, #9
    b.ls 2f
    add x0, x0, #0x27               // 'a' - '0' - 10
2:  add x0, x0, #0x30
    bl early_putc
    subs x14, x14, #4
    b.ge 1b
    ret x17

    .ltorg


// ---------------------------------------------------------------------------
// Running at the link address.
    .section .text.boot, "ax"
primary_switched:
    bl drop_idmap
    orr x0, x25, #PTE_TABLE         // link the fixmap L3 (its boot_l2 entry)
    ldr x1, =boot_l2
    str x0, [x1, #{FIXMAP_L2_OFF}]
    dsb sy
    isb
    ldr x0, =hvmm_vectors
    msr vbar_el2, x0
    isb
    ldr x0, =__bss_start
    ldr x1, =__bss_end
2:  cmp x0, x1
    b.hs 3f
    stp xzr, xzr, [x0], #16
    b 2b
3:  msr tpidr_el2, xzr              // this CPU's index, for the vectors
    ldr x0, =boot_stacks
    add sp, x0, #{STACK_SIZE}
    mov x0, x19                     // dtb_pa
    mov x1, #0                      // cpu
    bl start_hvmm
    mov x0, #{EXIT_RETURNED}
    b hvmm_exit

secondary_switched:
    bl drop_idmap                   // before the root switch (Rust)
    ldr x0, =hvmm_vectors
    msr vbar_el2, x0
    isb
    msr tpidr_el2, x21              // this CPU's index, for the vectors
    ldr x0, =boot_stacks
    mov x1, #{STACK_SIZE}
    madd x0, x21, x1, x0
    add sp, x0, x1
    mov x0, x21
    bl start_secondary
    mov x0, #{EXIT_RETURNED}
    b hvmm_exit

// Removes the boot tables' identity entry (break) and invalidates this CPU's
// TLB, so that nothing it cached maps an address the runtime tables map
// otherwise. Running at the link address; clobbers x0, x1.
drop_idmap:
    ldr x0, =boot_idmap
    ldr x1, [x0]
    cbz x1, 1f
    dsb sy
    str xzr, [x1]
    dsb sy
    tlbi alle2
    dsb nsh
    isb
1:  ret

// ---------------------------------------------------------------------------
// The EFI entry point: hvmm started as a UEFI application (GRUB's
// xen_hypervisor loader hands the image to the firmware's LoadImage and
// StartImage). x0 ImageHandle, x1 SystemTable; EL2 with the firmware's MMU
// and caches on, identity mapped (VA == PA), at a 4 KiB-aligned address the
// firmware chose. Position independent: PC-relative addresses and constant
// literals only (no absolute address of a symbol is used here).
//
//   1. refuse anything but EL2 (return EFI_UNSUPPORTED to the loader);
//   2. find the device-tree configuration table (the FDT GRUB installed,
//      with /chosen/module@* nodes);
//   3. GetMemoryMap into efi_mmap (in .data: the head does not zero it) and
//      ExitBootServices with its key; once more if the key changed;
//   4. clean+invalidate to the point of coherency: the image, the FDT and
//      every LoaderCode/LoaderData range (the modules GRUB wrote), so the
//      MMU-off head and later non-cacheable fixmap reads see them;
//   5. MMU, D-cache and I-cache off (SCTLR_EL2), I-cache and TLB invalidated;
//   6. enter the normal head at primary_entry with x0 = FDT.
//
// Registers: x19 ImageHandle, x20 SystemTable, x21/x22 table walk, x23 FDT,
// x24 BootServices, x25 attempts left, x26 D-cache line size.
.equ EFI_UNSUPPORTED_LO, 3                  // EFI_UNSUPPORTED = 1 << 63 | 3
.equ EFI_ST_BOOT_SERVICES, 96
.equ EFI_ST_NUM_TABLES, 104
.equ EFI_ST_TABLES, 112
.equ EFI_BS_GET_MEMORY_MAP, 56
.equ EFI_BS_EXIT_BOOT_SERVICES, 232
.equ EFI_MMAP_BYTES, 0x3000

    .global efi_stub
efi_stub:
    stp x29, x30, [sp, #-96]!
    mov x29, sp
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    mov x19, x0
    mov x20, x1
    adr_l x0, msg_efi_hello
    bl early_puts
    mrs x0, CurrentEL
    cmp x0, #(2 << 2)
    b.eq 1f
    adr_l x0, msg_efi_not_el2
    b efi_fail

    // 2. The device tree: GUID b1b621d5-f19c-41a5-830b-d9152c69aae0.
1:  ldr x21, [x20, #EFI_ST_NUM_TABLES]
    ldr x22, [x20, #EFI_ST_TABLES]
    ldr x2, =0x41a5f19cb1b621d5
    ldr x3, =0xe0aa692c15d90b83
2:  cbz x21, efi_no_fdt
    ldp x4, x5, [x22]
    cmp x4, x2
    ccmp x5, x3, #0, eq
    b.eq 3f
    add x22, x22, #24
    sub x21, x21, #1
    b 2b
3:  ldr x23, [x22, #16]
    ldr w0, [x23]
    ldr w1, =0xedfe0dd0             // 0xd00dfeed, big endian
    cmp w0, w1
    b.eq 4f
    adr_l x0, msg_efi_bad_fdt
    b efi_fail

    // 3. Memory map, then ExitBootServices with its key (twice at most).
4:  ldr x24, [x20, #EFI_ST_BOOT_SERVICES]
    mov x25, #2
5:  adr_l x0, efi_mmap_size
    mov x1, #EFI_MMAP_BYTES
    str x1, [x0]
    adr_l x1, efi_mmap
    adr_l x2, efi_mmap_key
    adr_l x3, efi_desc_size
    adr_l x4, efi_desc_version
    ldr x9, [x24, #EFI_BS_GET_MEMORY_MAP]
    blr x9
    cbz x0, 6f
    mov x27, x0
    adr_l x0, msg_efi_mmap
    b efi_fail_status
6:  mov x0, x19
    adr_l x1, efi_mmap_key
    ldr x1, [x1]
    ldr x9, [x24, #EFI_BS_EXIT_BOOT_SERVICES]
    blr x9
    cbz x0, 7f
    mov x27, x0
    subs x25, x25, #1
    b.ne 5b
    adr_l x0, msg_efi_exit
    b efi_fail_status

    // Boot services are gone: no firmware call from here on.
7:  msr daifset, #0xf
    adr_l x0, efi_booted
    mov x1, #1
    str x1, [x0]

    // 4. Clean and invalidate to the point of coherency.
    mrs x0, ctr_el0
    ubfx x0, x0, #16, #4
    mov x26, #4
    lsl x26, x26, x0                // D-cache line size
    adr_l x0, _start
    adr_l x1, _end
    bl efi_dcache_civac
    mov x0, x23
    ldr w1, [x23, #4]
    rev w1, w1                      // totalsize (big endian)
    add x1, x0, x1
    bl efi_dcache_civac
    adr_l x21, efi_mmap
    adr_l x22, efi_mmap_size
    ldr x22, [x22]
    add x22, x21, x22               // end of the descriptors
    adr_l x27, efi_desc_size
    ldr x27, [x27]
8:  cmp x21, x22
    b.hs 9f
    ldr w0, [x21]                   // Type
    sub w0, w0, #1
    cmp w0, #1                      // LoaderCode (1) or LoaderData (2)
    b.hi 10f
    ldr x0, [x21, #8]               // PhysicalStart
    ldr x1, [x21, #24]              // NumberOfPages
    add x1, x0, x1, lsl #12
    bl efi_dcache_civac
10: add x21, x21, x27
    b 8b

    // 5. MMU and caches off. This code keeps running: VA == PA.
9:  dsb sy
    mrs x0, sctlr_el2
    mov x1, #(1 << 12)              // I
    orr x1, x1, #(1 << 2)           // C
    orr x1, x1, #1                  // M
    bic x0, x0, x1
    msr sctlr_el2, x0
    isb
    ic iallu
    tlbi alle2
    dsb sy
    isb

    // 6. The normal boot path, MMU off, x0 = the FDT.
    mov x0, x23
    mov x1, xzr
    mov x2, xzr
    mov x3, xzr
    b primary_entry

// dc civac over [x0, x1), line size x26; clobbers x0.
efi_dcache_civac:
    sub x2, x26, #1
    bic x0, x0, x2
1:  cmp x0, x1
    b.hs 2f
    dc civac, x0
    add x0, x0, x26
    b 1b
2:  ret

efi_no_fdt:
    adr_l x0, msg_efi_no_fdt
// Prints x0 and returns EFI_UNSUPPORTED to the loader (boot services intact).
efi_fail:
    bl early_puts
    movz x0, #EFI_UNSUPPORTED_LO
    movk x0, #0x8000, lsl #48
    b efi_return
// Prints x0, then the EFI status in x27, and returns that status.
efi_fail_status:
    bl early_puts
    mov x0, x27
    bl early_puthex
    adr_l x0, msg_nl
    bl early_puts
    mov x0, x27
efi_return:
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #96
    ret

    .ltorg

// hvmm_exit(code): semihosting SYS_EXIT_EXTENDED with the code, else PSCI
// SYSTEM_OFF. Works with the MMU on or off (PC-relative only). Never returns.
    .global hvmm_exit
hvmm_exit:
    mov x9, x0
    adr_l x1, exit_in_progress
    mov x2, #1
    str x2, [x1]
    adr_l x1, exit_block
    movz x2, #0x0026
    movk x2, #0x2, lsl #16          // ADP_Stopped_ApplicationExit
    stp x2, x9, [x1]
    mov x0, #0x20                   // SYS_EXIT_EXTENDED
    hlt #0xf000
psci_off:
    movz x0, #0x0008
    movk x0, #0x8400, lsl #16       // PSCI SYSTEM_OFF
    smc #0
1:  wfi
    b 1b

    .ltorg

// ---------------------------------------------------------------------------
// Exception vectors (VBAR_EL2). x0 = the kind, 0-15 in table order.
    .section .text.vectors, "ax"
    .balign 2048
    .global hvmm_vectors
hvmm_vectors:
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    .if \kind == 8
    b guest_sync_entry              // a guest's trap: x0 is the guest's
    .else
    mov x0, #\kind
    b vector_common
    .endif
    .endr

// A synchronous exception from the guest (EL1/EL0, AArch64): save its
// x0..x30 on this CPU's stack, let Rust serve it, restore, return.
guest_sync_entry:
    sub sp, sp, #256
    stp x0, x1, [sp, #0]
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    str x30, [sp, #240]
    mov x0, sp
    ldr x1, =hvmm_guest_sync
    blr x1
    mov x0, sp
    b guest_restore

// guest_eret(regs, sp): x0..x30 from regs, SP_EL2 = sp (the restore below
// pops a frame's 256 bytes: start 256 lower), eret. Only reads follow the
// SP change, so `regs` may lie anywhere on the abandoned stack.
    .global guest_eret
guest_eret:
    sub sp, x1, #256
guest_restore:
    ldp x2, x3, [x0, #16]
    ldp x4, x5, [x0, #32]
    ldp x6, x7, [x0, #48]
    ldp x8, x9, [x0, #64]
    ldp x10, x11, [x0, #80]
    ldp x12, x13, [x0, #96]
    ldp x14, x15, [x0, #112]
    ldp x16, x17, [x0, #128]
    ldp x18, x19, [x0, #144]
    ldp x20, x21, [x0, #160]
    ldp x22, x23, [x0, #176]
    ldp x24, x25, [x0, #192]
    ldp x26, x27, [x0, #208]
    ldp x28, x29, [x0, #224]
    ldr x30, [x0, #240]
    ldp x0, x1, [x0, #0]
    add sp, sp, #256
    eret

vector_common:
    adr_l x1, exit_in_progress      // an exception while exiting (no
    ldr x1, [x1]                    // semihosting): power off instead
    cbnz x1, psci_off
    adr_l x5, in_exception          // a fault while reporting one: exit
    ldr x6, [x5]
    cbnz x6, double_fault
    mov x6, #1
    str x6, [x5]
    mrs x1, esr_el2
    mrs x2, far_el2
    mrs x3, elr_el2
    mrs x4, spsr_el2
    mrs x5, sctlr_el2
    tbz x5, #0, early_exception     // MMU off: no Rust yet
    // The report never returns: it runs from the top of this CPU's own
    // stack slot (TPIDR_EL2: its index), so that an overflow into the
    // guard page below the stack, SP pointing there, is still reported.
    mrs x6, tpidr_el2
    cmp x6, #{MAX_CPUS}
    b.hs 1f
    ldr x7, =boot_stacks
    mov x8, #{STACK_SIZE}
    madd x7, x6, x8, x7
    add sp, x7, x8
1:  ldr x5, =hvmm_exception
    blr x5
    b double_fault

double_fault:
    mov x0, #{EXIT_EXCEPTION}
    b hvmm_exit

early_exception:
    mov x22, x0
    mov x23, x1
    mov x24, x2
    mov x26, x3
    adr_l x0, msg_early_exc
    bl early_puts
    mov x0, x22
    bl early_puthex
    adr_l x0, msg_esr
    bl early_puts
    mov x0, x23
    bl early_puthex
    adr_l x0, msg_far
    bl early_puts
    mov x0, x24
    bl early_puthex
    adr_l x0, msg_elr
    bl early_puts
    mov x0, x26
    bl early_puthex
    adr_l x0, msg_nl
    bl early_puts
    mov x0, #{EXIT_EXCEPTION}
    b hvmm_exit

    .ltorg

// ---------------------------------------------------------------------------
    .section .rodata.head, "a"
msg_not_el2:    .asciz "hvmm: not entered at EL2 (CurrentEL "
msg_close:      .asciz "): cannot run\r\n"
msg_too_many:   .asciz "hvmm: secondary CPU index beyond MAX_CPUS\r\n"
msg_early_exc:  .asciz "hvmm: exception with the MMU off: vector "
msg_esr:        .asciz " ESR_EL2="
msg_far:        .asciz " FAR_EL2="
msg_elr:        .asciz " ELR_EL2="
msg_nl:         .asciz "\r\n"
msg_efi_hello:  .asciz "hvmm: EFI entry: finding the device tree, exiting boot services\r\n"
msg_efi_not_el2: .asciz "hvmm: EFI entry not at EL2 (QEMU needs virtualization=on): cannot run\r\n"
msg_efi_no_fdt: .asciz "hvmm: no device tree in the UEFI configuration table (QEMU needs acpi=off): cannot run\r\n"
msg_efi_bad_fdt: .asciz "hvmm: the UEFI device-tree table does not point to an FDT: cannot run\r\n"
msg_efi_mmap:   .asciz "hvmm: GetMemoryMap failed, EFI status "
msg_efi_exit:   .asciz "hvmm: ExitBootServices failed twice, EFI status "

    .section .data.hvmm_head, "aw"
    .balign 16
exit_block:       .quad 0, 0
exit_in_progress: .quad 0
in_exception:     .quad 0

// What the EFI stub leaves for Rust (file-backed .data: the head zeroes
// neither; a non-EFI boot sees efi_booted == 0).
    .balign 8
    .global efi_booted, efi_mmap_size, efi_desc_size, efi_desc_version, efi_mmap
efi_booted:       .quad 0
efi_mmap_size:    .quad 0
efi_mmap_key:     .quad 0
efi_desc_size:    .quad 0
efi_desc_version: .quad 0
    .balign 16
efi_mmap:         .space EFI_MMAP_BYTES

// Boot page tables: zeroed and filled by the head (not file-backed).
    .section .pgtables, "aw", %nobits
    .balign 4096
    .global boot_root, boot_l0, boot_l1, boot_l2, boot_l3, boot_fixmap_l3
boot_root:                          // the root table (TTBR0_EL2)
boot_l0:        .space 4096
boot_l1:        .space 4096
boot_l2:        .space 4096
boot_l3:        .space 4096 * {IMAGE_L3_TABLES}
boot_id_l1:     .space 4096
boot_id_l2:     .space 4096
boot_id_l3:     .space 4096
boot_fixmap_l3: .space 4096
// Runtime tables, one page each, filled by the shared boot sequence
// (setup_pagetables): root (L0), L1, L2 (VA 0-1 GiB), the image's L3.
    .global runtime_root, runtime_l1, runtime_l2, runtime_l3
runtime_root:   .space 4096
runtime_l1:     .space 4096
runtime_l2:     .space 4096
runtime_l3:     .space 4096 * {IMAGE_L3_TABLES}
// The head's identity-map record: the entry's link VA, its value, the PA of
// the MMU-enable code.
    .global boot_idmap
boot_idmap:     .space 24

// The CPUs' boot stacks: one slot of STACK_SIZE each, whose first page is a
// guard page (the runtime tables leave it unmapped) and the rest the stack.
    .section .bss.stacks, "aw", %nobits
    .balign 4096
    .global boot_stacks, boot_stacks_end, hvmm_stack_slot
boot_stacks:    .space {STACK_SIZE} * {MAX_CPUS}
boot_stacks_end:
    .set hvmm_stack_slot, {STACK_SIZE}
