//! A bound on how deeply an infix expression's syntax tree nests, computed in one pass
//! over its text before a recursive parser sees it (CEL's in caveats, Cedar's in
//! policies): within a bracket level, a run of n operators of one precedence class nests
//! n deep, and an operator of a looser class ends the runs of the tighter ones, so a
//! level's depth is at most the sum of its longest runs plus its deepest bracket. The
//! scanners (which know each language's tokens) keep a stack of [`Level`]s.

/// Operator precedence classes, loosest first; both languages have these eight.
pub const CLASSES: usize = 8;
/// `?:` in CEL, `if then else` in Cedar.
pub const CONDITIONAL: usize = 0;
pub const OR: usize = 1;
pub const AND: usize = 2;
pub const RELATION: usize = 3;
pub const ADD: usize = 4;
pub const MUL: usize = 5;
pub const UNARY: usize = 6;
/// Member access, indexing and calls.
pub const MEMBER: usize = 7;

/// One bracket level.
#[derive(Debug, Default)]
pub struct Level {
    /// Per class: the run of operators in the current operand.
    run: [usize; CLASSES],
    /// Per class: the longest run so far.
    longest: [usize; CLASSES],
    /// The deepest bracket nested in this level, as a depth.
    child: usize,
}

impl Level {
    /// An operator of class `class`: its run grows (returned); the runs of tighter
    /// classes end.
    pub fn operator(&mut self, class: usize) -> usize {
        self.end_runs(class + 1);
        self.run.get_mut(class).map_or(0, |r| {
            *r += 1;
            *r
        })
    }

    /// Ends the runs of the classes from `from` on.
    pub fn end_runs(&mut self, from: usize) {
        for (run, longest) in self.run.iter_mut().zip(self.longest.iter_mut()).skip(from) {
            *longest = (*longest).max(*run);
            *run = 0;
        }
    }

    /// A bracket nested in this level closed at `depth`.
    pub fn nested(&mut self, depth: usize) {
        self.child = self.child.max(depth);
    }

    /// The level's depth so far (ends every run).
    pub fn depth(&mut self) -> usize {
        self.end_runs(0);
        self.longest.iter().sum::<usize>() + self.child + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_one_class_add_up_and_a_looser_operator_ends_tighter_runs() {
        let mut l = Level::default();
        assert_eq!((l.operator(ADD), l.operator(ADD), l.operator(ADD)), (1, 2, 3));
        // `a + a + a + a < b * b`: the comparison ends the additions' run.
        assert_eq!(l.operator(RELATION), 1);
        assert_eq!(l.operator(MUL), 1);
        l.nested(4);
        assert_eq!(l.depth(), 3 + 1 + 1 + 4 + 1);
    }
}
